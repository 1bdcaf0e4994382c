package chatops

import (
	"strings"
	"unicode/utf8"
)

// Caps on the text healer puts in a message, counted after escaping and
// kept well inside Slack's own limits (150 characters for a header, 2,000
// for a section field, 3,000 for a section), so that a long alert cannot
// make Slack refuse the whole message.
const (
	maxHeader = 150
	maxField  = 300
	maxText   = 1000
	maxStep   = 100
)

// esc makes s, text healer did not write (alert labels and annotations,
// policy reasons, error messages, what a user typed), safe to put in a
// Slack message, cut to at most max characters. Slack reads <...> as a
// link, a mention (<!channel>, <@U123>) or a date and & as the start of an
// entity, so those three become &lt; &gt; &amp; and the text shows as
// written instead. A cut text ends in "…"; an entity is never cut in half.
func esc(s string, max int) string {
	if !strings.ContainsAny(s, "<>&") && utf8.RuneCountInString(s) <= max {
		return s
	}
	var b strings.Builder
	n := 0
	for i, r := range s {
		piece := string(r)
		switch r {
		case '<':
			piece = "&lt;"
		case '>':
			piece = "&gt;"
		case '&':
			piece = "&amp;"
		}
		// Room for the piece, and for "…" unless it is the last one.
		width, room := utf8.RuneCountInString(piece), max-n
		if i+utf8.RuneLen(r) < len(s) {
			room--
		}
		if width > room {
			b.WriteString("…")
			return b.String()
		}
		b.WriteString(piece)
		n += width
	}
	return b.String()
}

// code is s as an inline code span: escaped as esc does, on one line, and
// with its backticks, which would end the span, shown as ˋ (U+02CB).
func code(s string, max int) string {
	s = strings.NewReplacer("`", "ˋ", "\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	return "`" + esc(s, max) + "`"
}
