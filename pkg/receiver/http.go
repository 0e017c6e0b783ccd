package receiver

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/genproto/googleapis/rpc/code"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	contentTypeProto = "application/x-protobuf"
	contentTypeJSON  = "application/json"
)

// errTooLarge is returned by the limited body reader past the receive limit.
var errTooLarge = errors.New("request body exceeds the receive limit")

// ServeHTTP implements OTLP/HTTP POST /v1/metrics: protobuf or JSON bodies,
// plain or gzip, answered in the request's encoding.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		r.httpError(w, contentTypeJSON, http.StatusMethodNotAllowed, code.Code_UNIMPLEMENTED, "only POST is supported")
		return
	}
	ct, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || (ct != contentTypeProto && ct != contentTypeJSON) {
		r.httpError(w, contentTypeJSON, http.StatusUnsupportedMediaType, code.Code_INVALID_ARGUMENT,
			fmt.Sprintf("unsupported Content-Type %q: use %s or %s", req.Header.Get("Content-Type"), contentTypeProto, contentTypeJSON))
		return
	}
	if r.isDraining() {
		w.Header().Set("Retry-After", "5")
		r.httpError(w, ct, http.StatusServiceUnavailable, code.Code_UNAVAILABLE, "server is shutting down; retry against another replica")
		return
	}
	var body io.Reader = req.Body
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "corrupt gzip body: "+err.Error())
			return
		}
		defer gz.Close()
		body = gz
	default:
		r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, fmt.Sprintf("unsupported Content-Encoding %q: use gzip or none", enc))
		return
	}
	data, err := readLimited(body, r.cfg.MaxRecvSize)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			r.httpError(w, ct, http.StatusRequestEntityTooLarge, code.Code_RESOURCE_EXHAUSTED,
				fmt.Sprintf("request exceeds the receive limit of %d bytes after decompression", r.cfg.MaxRecvSize))
			return
		}
		r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "read body: "+err.Error())
		return
	}
	r.m.bytes.WithLabelValues("http").Add(float64(len(data)))
	er := pmetricotlp.NewExportRequest()
	if ct == contentTypeJSON {
		err = er.UnmarshalJSON(data)
	} else {
		err = er.UnmarshalProto(data)
	}
	if err != nil {
		r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "decode OTLP metrics: "+err.Error())
		return
	}
	resp := r.ingest(er.Metrics())
	var out []byte
	if ct == contentTypeJSON {
		out, err = resp.MarshalJSON()
	} else {
		out, err = resp.MarshalProto()
	}
	if err != nil {
		r.httpError(w, ct, http.StatusInternalServerError, code.Code_INTERNAL, "encode response: "+err.Error())
		return
	}
	r.m.requests.WithLabelValues("http", strconv.Itoa(http.StatusOK)).Inc()
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// readLimited reads at most limit bytes, failing with errTooLarge beyond,
// so a small gzip bomb cannot expand past the limit.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, errTooLarge
	}
	return data, nil
}

// httpError writes a google.rpc.Status body in the request's encoding.
func (r *Receiver) httpError(w http.ResponseWriter, ct string, httpCode int, c code.Code, msg string) {
	r.m.requests.WithLabelValues("http", strconv.Itoa(httpCode)).Inc()
	st := &spb.Status{Code: int32(c), Message: msg}
	var out []byte
	if ct == contentTypeProto {
		out, _ = proto.Marshal(st)
	} else {
		ct = contentTypeJSON
		out, _ = protojson.Marshal(st)
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(httpCode)
	_, _ = w.Write(out)
}
