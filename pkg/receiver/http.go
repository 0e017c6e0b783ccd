package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

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
// plain or gzip, answered in the request's encoding. The body is read,
// decompressed and charged to the in-flight byte budget (body.go) before
// an in-flight slot is taken, so a slow sender never holds a slot; the
// server's read timeouts bound how long it holds its connection.
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
	gz := false
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		gz = true
	default:
		r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, fmt.Sprintf("unsupported Content-Encoding %q: use gzip or none", enc))
		return
	}
	if r.draining.Load() {
		r.httpUnavailable(w, ct, errDraining)
		return
	}
	// The body is read and decompressed before a slot is taken, every
	// byte charged to the in-flight budget before it is allocated.
	ch := charge{r: r}
	defer ch.release()
	data, err := r.readBody(req.Body, req.ContentLength, gz, &ch)
	if err != nil {
		switch {
		case errors.Is(err, errTooLarge):
			r.httpError(w, ct, http.StatusRequestEntityTooLarge, code.Code_RESOURCE_EXHAUSTED,
				fmt.Sprintf("request exceeds the receive limit of %d bytes after decompression", r.cfg.MaxRecvSize))
		case errors.Is(err, errOverloaded):
			r.httpUnavailable(w, ct, err)
		case errors.Is(err, errCorrupt):
			r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, err.Error())
		default:
			r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "read body: "+err.Error())
		}
		return
	}
	defer free(data, &ch)
	n := int64(len(data))
	if ct == contentTypeJSON {
		// Bound pdata's recursion (json.go), then charge its object tree
		// before it is built.
		sc, err := scanJSON(data)
		if err != nil {
			r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "decode OTLP metrics JSON: "+err.Error())
			return
		}
		if err := ch.add(sc.treeBytes(n)); err != nil {
			r.httpUnavailable(w, ct, err)
			return
		}
	}
	if err := r.acquire(); err != nil {
		r.httpUnavailable(w, ct, err)
		return
	}
	defer r.releaseSlot()
	if r.testHook != nil {
		r.testHook()
	}
	var res result
	if ct == contentTypeJSON {
		r.m.bytes.WithLabelValues("http", "json").Add(float64(n))
		if res, err = r.ingestJSON(data); err != nil {
			r.httpError(w, ct, http.StatusBadRequest, code.Code_INVALID_ARGUMENT, "decode OTLP metrics JSON: "+err.Error())
			return
		}
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

// readBody reads a request body (gzip-compressed when gz) into a buffer
// from alloc, decompressed. The body is read as it arrives (a slow sender
// holds about what it has sent, whatever Content-Length it claims) and in
// full before it is inflated, fast, into a buffer sized from the gzip
// trailer.
func (r *Receiver) readBody(body io.Reader, contentLength int64, gz bool, ch *charge) ([]byte, error) {
	limit := r.cfg.MaxRecvSize
	rawLimit := limit
	if gz {
		rawLimit = gzipLimit(limit)
	}
	if contentLength > rawLimit {
		return nil, errTooLarge
	}
	raw, err := readAll(body, rawLimit, contentLength, false, ch)
	if err != nil || !gz {
		return raw, err
	}
	data, err := inflate(raw, limit, ch)
	free(raw, ch)
	return data, err
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
// The message is made valid UTF-8 first: decode errors quote the request's
// bytes (pdata's JSON errors show the bytes around the error), and a proto
// string that is not UTF-8 does not marshal, which used to leave the
// body, and so the client's message, empty.
func (r *Receiver) httpError(w http.ResponseWriter, ct string, httpCode int, c code.Code, msg string) {
	r.m.requests.WithLabelValues("http", strconv.Itoa(httpCode)).Inc()
	st := &spb.Status{Code: int32(c), Message: validMessage(msg)}
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

// validMessage makes an error message valid UTF-8 (a proto string) and at
// most maxMessage bytes.
func validMessage(msg string) string {
	return truncateUTF8(strings.ToValidUTF8(msg, "\uFFFD"), maxMessage)
}
