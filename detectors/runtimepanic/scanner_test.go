package runtimepanic

import (
	"os"
	"strings"
	"testing"
	"time"
)

// scanText feeds text line by line, one millisecond apart, then flushes.
func scanText(t *testing.T, text string) []Finding {
	t.Helper()
	sc := NewScanner(20, 2*time.Second)
	at := time.Date(2026, 11, 22, 3, 12, 4, 0, time.UTC)
	var out []Finding
	for i, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		out = append(out, sc.Feed(Line{Time: at.Add(time.Duration(i) * time.Millisecond), Text: l})...)
	}
	return append(out, sc.Flush()...)
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestScanner(t *testing.T) {
	type want struct {
		kind       Kind
		message    string
		goroutine  string
		signal     string
		lines      int
		stackFirst string
		stackLen   int
	}
	tests := []struct {
		name string
		text string
		want []want
	}{
		{
			name: "kubelet klog Observed a panic",
			text: readTestdata(t, "kubelet-observed-panic.log"),
			want: []want{{
				kind:       KindPanic,
				message:    `"invalid memory address or nil pointer dereference" (runtime error: invalid memory address or nil pointer dereference)`,
				goroutine:  "goroutine 412 [running]:",
				lines:      16,
				stackFirst: "goroutine 412 [running]:",
				stackLen:   15,
			}},
		},
		{
			name: "containerd nil pointer panic with SIGSEGV",
			text: readTestdata(t, "containerd-nil-deref.log"),
			want: []want{{
				kind:       KindPanic,
				message:    "runtime error: invalid memory address or nil pointer dereference",
				goroutine:  "goroutine 1871 [running]:",
				signal:     "SIGSEGV",
				lines:      14,
				stackFirst: "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x55d3a1c2e4f7]",
				stackLen:   12,
			}},
		},
		{
			name: "fatal error with several goroutines",
			text: readTestdata(t, "fatal-concurrent-map-writes.log"),
			want: []want{{
				kind:       KindFatal,
				message:    "concurrent map writes",
				goroutine:  "goroutine 77 [running]:",
				lines:      21,
				stackFirst: "goroutine 77 [running]:",
				stackLen:   17,
			}},
		},
		{
			name: "noise: klog errors and sentences mentioning panic",
			text: readTestdata(t, "noise.log"),
		},
		{
			name: "structured klog Observed a panic",
			text: "E1122 03:12:04.123456    1234 panic.go:262] \"Observed a panic\" panic=\"assignment to entry in nil map\" panicGoValue=\"\\\"assignment to entry in nil map\\\"\" stacktrace=<\n" +
				"\tgoroutine 233 [running]:\n" +
				"\tk8s.io/apimachinery/pkg/util/runtime.logPanic({0x4a5b1d0, 0x6f0c2e0}, {0x3b9e2a0, 0x49d9ff0})\n" +
				"\t\tk8s.io/apimachinery/pkg/util/runtime/runtime.go:132 +0xbc\n" +
				" >\n" +
				"I1122 03:12:04.200000    1234 kubelet.go:2425] \"SyncLoop\"\n",
			want: []want{{kind: KindPanic, message: "assignment to entry in nil map", goroutine: "goroutine 233 [running]:",
				lines: 5, stackFirst: "goroutine 233 [running]:", stackLen: 4}},
		},
		{
			name: "fatal out of memory with runtime stack",
			text: "fatal error: runtime: out of memory\n\nruntime stack:\nruntime.throw({0x1f2e4a0?, 0x0?})\n\t/usr/local/go/src/runtime/panic.go:1023 +0x5c fp=0x7ffd sp=0x7ffc pc=0x43b8fc\n\ngoroutine 1 [running]:\nmain.main()\n",
			want: []want{{kind: KindFatal, message: "runtime: out of memory", goroutine: "goroutine 1 [running]:",
				lines: 8, stackFirst: "runtime stack:", stackLen: 5}},
		},
		{
			name: "bare SIGSEGV from cgo",
			text: "SIGSEGV: segmentation violation\nPC=0x7f3a1c0de4f7 m=3 sigcode=1 addr=0x0\nsignal arrived during cgo execution\n\ngoroutine 51 gp=0xc000582c40 m=3 mp=0xc000101008 [syscall]:\nruntime.cgocall(0x55d0b3, 0xc0004f5d48)\nrax    0x0\nrip    0x7f3a1c0de4f7\n",
			want: []want{{kind: KindSIGSEGV, message: "SIGSEGV: segmentation violation", goroutine: "goroutine 51 gp=0xc000582c40 m=3 mp=0xc000101008 [syscall]:",
				signal: "SIGSEGV", lines: 8, stackFirst: "PC=0x7f3a1c0de4f7 m=3 sigcode=1 addr=0x0", stackLen: 6}},
		},
		{
			name: "recovered and re-panicked is one report",
			text: "panic: boom [recovered]\n\tpanic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/main.go:9 +0x25\nexit\n",
			want: []want{{kind: KindPanic, message: "boom", goroutine: "goroutine 1 [running]:", lines: 6, stackFirst: "panic: boom", stackLen: 4}},
		},
		{
			name: "two panics back to back are two reports",
			text: "panic: first\n\ngoroutine 1 [running]:\nmain.main()\npanic: second\n\ngoroutine 1 [running]:\n",
			want: []want{
				{kind: KindPanic, message: "first", goroutine: "goroutine 1 [running]:", lines: 4, stackFirst: "goroutine 1 [running]:", stackLen: 2},
				{kind: KindPanic, message: "second", goroutine: "goroutine 1 [running]:", lines: 3, stackFirst: "goroutine 1 [running]:", stackLen: 1},
			},
		},
		{
			name: "a klog line ends the stack",
			text: "panic: x\ngoroutine 1 [running]:\nE1122 03:12:04.123456    1234 file.go:123] main.main()\n",
			want: []want{{kind: KindPanic, message: "x", goroutine: "goroutine 1 [running]:", lines: 2, stackFirst: "goroutine 1 [running]:", stackLen: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := scanText(t, tt.text)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d findings, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				if g.Kind != w.kind || g.Message != w.message || g.Goroutine != w.goroutine || g.Signal != w.signal || g.Lines != w.lines {
					t.Errorf("finding %d = {%s %q %q %q lines %d}, want {%s %q %q %q lines %d}", i,
						g.Kind, g.Message, g.Goroutine, g.Signal, g.Lines, w.kind, w.message, w.goroutine, w.signal, w.lines)
				}
				if len(g.Stack) != w.stackLen || len(g.Stack) > 0 && g.Stack[0] != w.stackFirst {
					t.Errorf("finding %d stack = %d lines %q, want %d starting %q", i, len(g.Stack), g.Stack, w.stackLen, w.stackFirst)
				}
			}
		})
	}
}

func TestScannerIdleGapClosesReport(t *testing.T) {
	sc := NewScanner(20, 2*time.Second)
	at := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	if got := sc.Feed(Line{Time: at, Text: "panic: x"}); len(got) != 0 {
		t.Fatalf("first line closed %v", got)
	}
	sc.Feed(Line{Time: at.Add(time.Second), Text: "goroutine 1 [running]:"})
	got := sc.Feed(Line{Time: at.Add(3500 * time.Millisecond), Text: "main.main()"})
	if len(got) != 1 || got[0].Lines != 2 || got[0].Time != at {
		t.Fatalf("after a 2.5s gap got %+v, want the 2-line report closed", got)
	}
	if sc.Open() {
		t.Fatal("a frame after the gap started a report")
	}
}

func TestScannerStackCap(t *testing.T) {
	sc := NewScanner(5, 2*time.Second)
	for l := range strings.SplitSeq(readTestdata(t, "fatal-concurrent-map-writes.log"), "\n") {
		sc.Feed(Line{Text: l})
	}
	got := sc.Flush()
	if len(got) != 1 || len(got[0].Stack) != 5 || got[0].Lines != 22 {
		t.Fatalf("got %+v, want one report of 22 lines with 5 stack lines", got)
	}
}
