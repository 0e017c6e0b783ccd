package receiver

import (
	"compress/gzip"
	"encoding/json"
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
	defer func() {
		if p := recover(); p != nil {
			r.logger.Error("Export panicked", "panic", fmt.Sprint(p))
			r.httpError(w, ct, http.StatusInternalServerError, code.Code_INTERNAL, "internal error while ingesting")
		}
	}()
	if err := r.acquire(); err != nil {
		r.httpUnavailable(w, ct, err)
		return
	}
	var n int64
	defer func() { r.release(n) }()
	var body io.Reader = req.Body
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "corrupt gzip body: "+err.Error())
			return
		}
		defer func() { _ = gz.Close() }()
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
	if err := r.addBytes(int64(len(data))); err != nil {
		r.httpUnavailable(w, ct, err)
		return
	}
	n = int64(len(data))
	if r.testHook != nil {
		r.testHook()
	}
	var res result
	if ct == contentTypeJSON {
		r.m.bytes.WithLabelValues("http", "json").Add(float64(n))
		er := pmetricotlp.NewExportRequest()
		if err := er.UnmarshalJSON(data); err != nil {
			r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "decode OTLP metrics JSON: "+err.Error())
			return
		}
		res = r.ingestPdata(er.Metrics())
	} else {
		r.m.bytes.WithLabelValues("http", "protobuf").Add(float64(n))
		if res, err = r.ingestProto(data); err != nil {
			r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "decode OTLP metrics: "+err.Error())
			return
		}
	}
	var out []byte
	if ct == contentTypeJSON {
		out = encodeResponseJSON(res)
	} else {
		out = encodeResponse(res)
	}
	r.m.requests.WithLabelValues("http", strconv.Itoa(http.StatusOK)).Inc()
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// encodeResponseJSON encodes an ExportMetricsServiceResponse in OTLP JSON:
// "{}" on full success (pdata would write an empty partialSuccess).
func encodeResponseJSON(res result) []byte {
	if res.rejected == 0 && res.message == "" {
		return []byte("{}")
	}
	type partial struct {
		RejectedDataPoints string `json:"rejectedDataPoints"`
		ErrorMessage       string `json:"errorMessage"`
	}
	out, _ := json.Marshal(struct {
		PartialSuccess partial `json:"partialSuccess"`
	}{partial{strconv.FormatInt(res.rejected, 10), res.message}})
	return out
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

func (r *Receiver) httpUnavailable(w http.ResponseWriter, ct string, err error) {
	retry := "1"
	if errors.Is(err, errDraining) {
		retry = "5"
	}
	w.Header().Set("Retry-After", retry)
	r.httpError(w, ct, http.StatusServiceUnavailable, code.Code_UNAVAILABLE, err.Error())
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
