package bus

import (
	"time"
	"unicode/utf8"
)

// AppendJSON appends the JSON form of e to dst. It writes the same document
// as encoding/json would, but copies Data as it is instead of compacting
// and re-validating it: on the webhook's hot path the data was just
// produced by json.Marshal, and events read from the bus were validated
// when they were decoded.
func (e *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"specversion":`...)
	dst = appendJSONString(dst, e.SpecVersion)
	dst = append(dst, `,"id":`...)
	dst = appendJSONString(dst, e.ID)
	dst = append(dst, `,"source":`...)
	dst = appendJSONString(dst, e.Source)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, e.Type)
	dst = append(dst, `,"subject":`...)
	dst = appendJSONString(dst, e.Subject)
	dst = append(dst, `,"time":"`...)
	dst = e.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	if e.DataContentType != "" {
		dst = append(dst, `,"datacontenttype":`...)
		dst = appendJSONString(dst, e.DataContentType)
	}
	dst = append(dst, `,"status":`...)
	dst = appendJSONString(dst, e.Status)
	dst = append(dst, `,"key":`...)
	dst = appendJSONString(dst, e.Key)
	if e.Trigger != "" {
		dst = append(dst, `,"trigger":`...)
		dst = appendJSONString(dst, e.Trigger)
	}
	if e.Origin != "" {
		dst = append(dst, `,"origin":`...)
		dst = appendJSONString(dst, e.Origin)
	}
	if len(e.Data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, e.Data...)
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaping like encoding/json
// (including <, > and &, \b and \f, and the line separators U+2028 and
// U+2029).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
