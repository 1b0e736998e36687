package middleware

import (
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// LogHandler is the service's JSON log: slog's JSONHandler on w, whose
// lines RequestLog's access lines join without going through slog. Written
// by hand (appendAccess), an access line is the very same bytes slog would
// write, at a fraction of the cost: slog formats each field through its
// generic Value, and a float (duration_ms) through encoding/json. A line
// with anything to escape goes through slog. With attributes or a group
// added (WithAttrs, WithGroup) it is slog's handler alone, as the lines
// then differ. w must be safe for concurrent writes (LogWriter, os.File):
// the access lines do not take slog's lock.
type LogHandler struct {
	*slog.JSONHandler
	w    io.Writer
	bufs sync.Pool // *[]byte: a line's buffer
}

// NewLogHandler returns a LogHandler writing JSON lines at level and above
// to w.
func NewLogHandler(w io.Writer, level slog.Leveler) *LogHandler {
	return &LogHandler{
		JSONHandler: slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}),
		w:           w,
		bufs:        sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }},
	}
}

// writeAccess writes a's line, and reports whether it did: not when a
// field needs escaping (the caller then logs it through slog).
func (h *LogHandler) writeAccess(a *accessLine) bool {
	bp := h.bufs.Get().(*[]byte)
	b, ok := appendAccess((*bp)[:0], a)
	if ok {
		_, _ = h.w.Write(b) // as slog.Logger does: nowhere to report it
	}
	*bp = b
	h.bufs.Put(bp)
	return ok
}

// accessLine is one request's access line: its fields, in their order.
type accessLine struct {
	end           time.Time
	method, route string
	status        int
	took          time.Duration
	requestID     string
	identity      string // "" is left out
	decided       bool   // decision and remaining are written
	decision      string
	remaining     int
	shadowLimited []PolicyRef
}

// durationMS is the line's duration_ms: milliseconds, to the microsecond.
func (a *accessLine) durationMS() float64 {
	return float64(a.took.Microseconds()) / 1000
}

// attrs are the line's fields after the first three (method, route,
// status), for slog.
func (a *accessLine) attrs(r *slog.Record) {
	r.AddAttrs(
		slog.Float64("duration_ms", a.durationMS()),
		slog.String("request_id", a.requestID),
	)
	if a.identity != "" {
		r.AddAttrs(slog.String("identity", a.identity))
	}
	if a.decided {
		r.AddAttrs(slog.String("decision", a.decision), slog.Int("remaining", a.remaining))
	}
	for _, s := range a.shadowLimited {
		r.AddAttrs(slog.String("shadow_limited", s.Policy))
	}
}

// appendAccess appends a's line as slog's JSONHandler writes it (the
// record's time, INFO, "request", then the fields) and reports whether it
// could: false when a string needs escaping, or the time or the duration
// would be written in a form of slog's other than the usual one.
func appendAccess(b []byte, a *accessLine) ([]byte, bool) {
	t := a.end.Round(0) // as slog: no monotonic reading
	ms := a.durationMS()
	// encoding/json writes floats outside [1e-6, 1e21) with an exponent;
	// slog writes an error for years outside [0, 9999].
	if ms != 0 && (ms < 1e-6 || ms >= 1e21) || t.Year() < 0 || t.Year() >= 10000 {
		return b, false
	}
	b = append(b, `{"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request","method":`...)
	var ok bool
	if b, ok = appendPlain(b, a.method); !ok {
		return b, false
	}
	b = append(b, `,"route":`...)
	if b, ok = appendPlain(b, a.route); !ok {
		return b, false
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(a.status), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, ms, 'f', -1, 64)
	b = append(b, `,"request_id":`...)
	if b, ok = appendPlain(b, a.requestID); !ok {
		return b, false
	}
	if a.identity != "" {
		b = append(b, `,"identity":`...)
		if b, ok = appendPlain(b, a.identity); !ok {
			return b, false
		}
	}
	if a.decided {
		b = append(b, `,"decision":`...)
		if b, ok = appendPlain(b, a.decision); !ok {
			return b, false
		}
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, int64(a.remaining), 10)
	}
	for _, s := range a.shadowLimited {
		b = append(b, `,"shadow_limited":`...)
		if b, ok = appendPlain(b, s.Policy); !ok {
			return b, false
		}
	}
	return append(b, "}\n"...), true
}

// appendPlain appends s as a JSON string if it has nothing to escape:
// printable ASCII but " \ < > & (which encoding/json's HTML mode would
// escape; none is in a route, a method or an id).
func appendPlain(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}
