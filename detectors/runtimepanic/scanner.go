package runtimepanic

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kind says what a finding reports.
type Kind string

// The kinds of finding.
const (
	// KindPanic is a Go panic, printed by the runtime or recovered and
	// logged by a Kubernetes component ("Observed a panic").
	KindPanic Kind = "panic"
	// KindFatal is a Go runtime fatal error ("fatal error: ..."), which
	// cannot be recovered.
	KindFatal Kind = "fatal"
	// KindSIGSEGV is a segmentation violation reported outside a Go panic,
	// typically in C code called through cgo.
	KindSIGSEGV Kind = "sigsegv"
	// KindCrashLoop is a unit that systemd restarted too often.
	KindCrashLoop Kind = "crashloop"
)

// Line is one log line with its timestamp.
type Line struct {
	Time time.Time
	Text string
}

// Finding is one crash report, or one crash loop, found in a log.
type Finding struct {
	Kind Kind
	// Message is the report's message: the panic value or fatal error
	// text, or for a crash loop a sentence saying how often the unit
	// restarted.
	Message string
	// FirstLine is the log line the report starts with (for a crash
	// loop, the restart that completed it).
	FirstLine string
	// Time is the timestamp of FirstLine.
	Time time.Time
	// Goroutine is the first goroutine header, for example
	// "goroutine 1 [running]:".
	Goroutine string
	// Signal is the signal named in the report ("SIGSEGV"), if any.
	Signal string
	// Stack holds the report's first stack lines, trimmed, blank lines
	// left out.
	Stack []string
	// Lines is the number of log lines the report spans.
	Lines int
	// Unit, Restarts and Window describe a crash loop.
	Unit     string
	Restarts int
	Window   time.Duration
}

// Scanner recognises Go crash reports in a log, one line at a time. It is
// not safe for concurrent use. A report starts with its first line and
// ends at the first line that cannot be part of it, at a gap of idle or
// more between line timestamps, or when Flush is called (end of input, or
// no new line for idle).
type Scanner struct {
	maxStack int
	idle     time.Duration

	klog            *regexp.Regexp
	observedOld     *regexp.Regexp
	observedStruct  *regexp.Regexp
	panicStart      *regexp.Regexp
	fatalStart      *regexp.Regexp
	sigsegvStart    *regexp.Regexp
	signal          *regexp.Regexp
	recovered       *regexp.Regexp
	goroutine       *regexp.Regexp
	frameFunc       *regexp.Regexp
	frameFile       *regexp.Regexp
	register        *regexp.Regexp
	continuationPfx []string

	cur  *Finding
	last time.Time
}

// NewScanner returns a scanner keeping up to maxStack stack lines per
// report and closing a report after a gap of idle between lines.
func NewScanner(maxStack int, idle time.Duration) *Scanner {
	return &Scanner{
		maxStack: maxStack,
		idle:     idle,
		// klog/glog header: Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg
		klog:           regexp.MustCompile(`^[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d{6}\s+\d+ [^\s\]]+:\d+\] ?(.*)$`),
		observedOld:    regexp.MustCompile(`^Observed a panic: (.+)$`),
		observedStruct: regexp.MustCompile(`^"Observed a panic"(?:.*?\spanic="((?:[^"\\]|\\.)*)")?`),
		panicStart:     regexp.MustCompile(`^panic: (.*)$`),
		fatalStart:     regexp.MustCompile(`^fatal error: (.*)$`),
		sigsegvStart:   regexp.MustCompile(`^\[?(?:signal )?SIGSEGV: segmentation violation`),
		signal:         regexp.MustCompile(`^\[signal (SIG[A-Z]+)`),
		recovered:      regexp.MustCompile(`\s*\[recovered[^\]]*\]$`),
		goroutine:      regexp.MustCompile(`^goroutine \d+(?: [^\[]*)? ?\[[^\]]*\]:$`),
		frameFunc:      regexp.MustCompile(`^[A-Za-z_][^\s(]*(?:\(\*?[^\s()]+\))?[^\s(]*\(.*\)$`),
		frameFile:      regexp.MustCompile(`^\S+\.(?:go|s|c):\d+(?: \+0x[0-9a-f]+)?(?: fp=0x[0-9a-f]+ sp=0x[0-9a-f]+ pc=0x[0-9a-f]+)?$`),
		register:       regexp.MustCompile(`^(?:r[a-z0-9]+|[re]?ip|rflags|[cdefgs]s|pc|sp|lr|fault)\s+0x[0-9a-f]+$`),
		continuationPfx: []string{
			"created by ", "runtime stack:", "runtime: ", "panic: ", "PC=0x", "[signal ",
			"signal arrived during", "...", "goroutine running on other thread", ">",
		},
	}
}

// Feed takes the next line and returns the reports it completes: none,
// or the report in progress when line cannot belong to it.
func (s *Scanner) Feed(l Line) []Finding {
	text := strings.TrimRight(l.Text, "\r\n")
	var out []Finding
	if s.cur != nil && l.Time.Sub(s.last) >= s.idle {
		out = append(out, s.close())
	}
	if s.cur != nil {
		if s.continues(text) {
			s.add(text)
			s.last = l.Time
			return out
		}
		out = append(out, s.close())
	}
	if f := s.start(text); f != nil {
		f.FirstLine, f.Time, f.Lines = text, l.Time, 1
		s.cur, s.last = f, l.Time
	}
	return out
}

// Open reports whether a report is in progress.
func (s *Scanner) Open() bool { return s.cur != nil }

// Flush completes the report in progress, if any.
func (s *Scanner) Flush() []Finding {
	if s.cur == nil {
		return nil
	}
	return []Finding{s.close()}
}

func (s *Scanner) close() Finding {
	f := *s.cur
	s.cur = nil
	return f
}

// start returns the report text begins, or nil.
func (s *Scanner) start(text string) *Finding {
	if m := s.klog.FindStringSubmatch(text); m != nil {
		// An ordinary klog line is never a report, whatever it says; one
		// logged by runtime.HandleCrash is.
		if o := s.observedOld.FindStringSubmatch(m[1]); o != nil {
			return &Finding{Kind: KindPanic, Message: o[1]}
		}
		if o := s.observedStruct.FindStringSubmatch(m[1]); o != nil {
			msg := o[1]
			if u, err := strconv.Unquote(`"` + msg + `"`); err == nil {
				msg = u
			}
			return &Finding{Kind: KindPanic, Message: msg}
		}
		return nil
	}
	if m := s.panicStart.FindStringSubmatch(text); m != nil {
		return &Finding{Kind: KindPanic, Message: s.recovered.ReplaceAllString(m[1], "")}
	}
	if m := s.fatalStart.FindStringSubmatch(text); m != nil {
		return &Finding{Kind: KindFatal, Message: m[1]}
	}
	if s.sigsegvStart.MatchString(text) {
		return &Finding{Kind: KindSIGSEGV, Message: strings.Trim(text, "[]"), Signal: "SIGSEGV"}
	}
	return nil
}

// continues reports whether text can be part of the report in progress.
func (s *Scanner) continues(text string) bool {
	if s.klog.MatchString(text) {
		return false
	}
	t := strings.TrimSpace(text)
	if t == "" {
		return true
	}
	// A new unindented panic or fatal error starts a new report; an
	// indented one ("\tpanic: ..." after "[recovered]") continues this one.
	if t == text && (s.panicStart.MatchString(text) || s.fatalStart.MatchString(text)) {
		return false
	}
	for _, p := range s.continuationPfx {
		if strings.HasPrefix(t, p) {
			return true
		}
	}
	return s.goroutine.MatchString(t) || s.frameFile.MatchString(t) || s.frameFunc.MatchString(t) ||
		s.register.MatchString(t)
}

func (s *Scanner) add(text string) {
	f := s.cur
	f.Lines++
	t := strings.TrimSpace(text)
	if t == "" {
		return
	}
	if f.Goroutine == "" && s.goroutine.MatchString(t) {
		f.Goroutine = t
	}
	if m := s.signal.FindStringSubmatch(t); m != nil && f.Signal == "" {
		f.Signal = m[1]
	}
	if len(f.Stack) < s.maxStack {
		f.Stack = append(f.Stack, t)
	}
}
