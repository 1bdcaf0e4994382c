package runtimepanic

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// journalEntry holds the journal fields the detector reads.
type journalEntry struct {
	Message  json.RawMessage `json:"MESSAGE"`
	Realtime string          `json:"__REALTIME_TIMESTAMP"`
	Unit     string          `json:"_SYSTEMD_UNIT"`
	// ObjectUnit is set by systemd on the messages it logs about a unit.
	ObjectUnit string `json:"UNIT"`
	PID        string `json:"_PID"`
}

// parseJournalLine decodes one line of `journalctl -o json`. MESSAGE is a
// string, or an array of bytes when it is not valid UTF-8.
func parseJournalLine(b []byte) (journalEntry, string, time.Time, error) {
	var e journalEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return e, "", time.Time{}, fmt.Errorf("decode journal entry: %w", err)
	}
	var msg string
	if err := json.Unmarshal(e.Message, &msg); err != nil {
		var raw []byte
		var ints []int
		if err2 := json.Unmarshal(e.Message, &ints); err2 != nil {
			return e, "", time.Time{}, fmt.Errorf("decode journal MESSAGE: %w", err)
		}
		for _, i := range ints {
			raw = append(raw, byte(i)) //nolint:gosec // journald writes a non-UTF-8 MESSAGE as an array of byte values
		}
		msg = string(raw)
	}
	us, err := strconv.ParseInt(e.Realtime, 10, 64)
	if err != nil {
		return e, "", time.Time{}, fmt.Errorf("decode journal __REALTIME_TIMESTAMP %q: %w", e.Realtime, err)
	}
	return e, msg, time.UnixMicro(us).UTC(), nil
}

// followJournal follows the journal of src.Unit until ctx ends, starting
// journalctl again when it stops.
func (d *Detector) followJournal(ctx context.Context, src Source, log *slog.Logger) {
	sc := NewScanner(d.cfg.MaxStack, d.cfg.StackIdle)
	rt := NewRestartTracker(src.Unit, d.cfg.CrashLoop.Restarts, d.cfg.CrashLoop.Window)
	backoff := time.Second
	for ctx.Err() == nil {
		err := d.readJournal(ctx, src, sc, rt, log)
		d.report(ctx, src, log, sc.Flush())
		if ctx.Err() != nil {
			return
		}
		log.WarnContext(ctx, "journal stream ended; restarting", "unit", src.Unit, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (d *Detector) readJournal(ctx context.Context, src Source, sc *Scanner, rt *RestartTracker, log *slog.Logger) error {
	rc, err := d.journal(ctx, src.Unit)
	if err != nil {
		return err
	}
	lines := make(chan []byte)
	done := make(chan error, 1)
	go func() {
		r := bufio.NewReaderSize(rc, 64*1024)
		for {
			b, err := r.ReadBytes('\n')
			if len(b) > 0 {
				select {
				case lines <- b:
				case <-ctx.Done():
					done <- ctx.Err()
					return
				}
			}
			if err != nil {
				done <- err
				return
			}
		}
	}()
	defer func() { _ = rc.Close() }()
	tick := time.NewTicker(d.poll)
	defer tick.Stop()
	var lastLine time.Time
	for {
		select {
		case <-ctx.Done():
			_ = rc.Close()
			return ctx.Err()
		case err := <-done:
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("journalctl for unit %s exited", src.Unit)
			}
			return fmt.Errorf("read journal of unit %s: %w", src.Unit, err)
		case <-tick.C:
			if sc.Open() && d.now().Sub(lastLine) >= d.cfg.StackIdle {
				d.report(ctx, src, log, sc.Flush())
			}
		case b := <-lines:
			lastLine = d.now()
			e, msg, at, err := parseJournalLine(b)
			if err != nil {
				log.DebugContext(ctx, "journal line skipped", "err", err)
				continue
			}
			for text := range strings.SplitSeq(msg, "\n") {
				l := Line{Time: at, Text: text}
				d.report(ctx, src, log, sc.Feed(l))
				if f := rt.Observe(e.ObjectUnit, l); f != nil {
					d.report(ctx, src, log, []Finding{*f})
				}
			}
		}
	}
}

// lineClock gives file lines their timestamps: the one the line starts
// with (RFC 3339, as in CRI and many daemons' file logs), a logrus
// time="..." field, or a klog header (year taken from the reading time);
// otherwise the last timestamp seen in the file, so a stack printed
// without timestamps still gets a stable one; otherwise the reading time.
type lineClock struct {
	rfc3339 *regexp.Regexp
	logrus  *regexp.Regexp
	klog    *regexp.Regexp
	last    time.Time
}

func newLineClock() *lineClock {
	return &lineClock{
		rfc3339: regexp.MustCompile(`^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})) (?:(?:stdout|stderr) [FP] )?`),
		logrus:  regexp.MustCompile(`^time="([^"]+)"`),
		klog:    regexp.MustCompile(`^[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{6}) `),
	}
}

// line returns the line for text, read at now, with any leading timestamp
// (and CRI stream tag) removed from its text.
func (c *lineClock) line(text string, now time.Time) Line {
	if m := c.rfc3339.FindStringSubmatch(text); m != nil {
		if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			c.last = t.UTC()
			return Line{Time: c.last, Text: text[len(m[0]):]}
		}
	}
	if m := c.logrus.FindStringSubmatch(text); m != nil {
		if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			c.last = t.UTC()
		}
	} else if m := c.klog.FindStringSubmatch(text); m != nil {
		n := make([]int, 6)
		for i := range n {
			n[i], _ = strconv.Atoi(m[i+1])
		}
		t := time.Date(now.Year(), time.Month(n[0]), n[1], n[2], n[3], n[4], n[5]*1000, now.Location())
		if t.Sub(now) > 24*time.Hour { // December's line read in January
			t = t.AddDate(-1, 0, 0)
		}
		c.last = t.UTC()
	}
	if c.last.IsZero() {
		return Line{Time: now.UTC(), Text: text}
	}
	return Line{Time: c.last, Text: text}
}

// followFile tails src.File until ctx ends, polling it. The first time it
// opens the file it starts at the end unless src.FromStart; a file that
// appears later, replaces the one it reads (rotation: a new inode) or is
// truncated is read from its beginning.
func (d *Detector) followFile(ctx context.Context, src Source, log *slog.Logger) {
	sc := NewScanner(d.cfg.MaxStack, d.cfg.StackIdle)
	clock := newLineClock()
	t := &tail{path: src.File, fromStart: src.FromStart}
	defer t.close()
	tick := time.NewTicker(d.poll)
	defer tick.Stop()
	var lastLine time.Time
	var lastErr string
	for {
		lines, err := t.poll()
		if err != nil && err.Error() != lastErr {
			log.WarnContext(ctx, "log file not readable; retrying", "file", src.File, "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		now := d.now()
		for _, text := range lines {
			lastLine = now
			d.report(ctx, src, log, sc.Feed(clock.line(text, now)))
		}
		if sc.Open() && now.Sub(lastLine) >= d.cfg.StackIdle {
			d.report(ctx, src, log, sc.Flush())
		}
		select {
		case <-ctx.Done():
			d.report(context.WithoutCancel(ctx), src, log, sc.Flush())
			return
		case <-tick.C:
		}
	}
}

// tail reads the lines appended to a file since the last poll.
type tail struct {
	path      string
	fromStart bool
	opened    bool // a file was opened before

	f       *os.File
	info    fs.FileInfo
	offset  int64
	partial []byte
}

func (t *tail) close() {
	if t.f != nil {
		_ = t.f.Close()
		t.f = nil
	}
}

// poll returns the complete lines appended since the last call. A line
// without its newline yet is kept until it is complete, or until the file
// is rotated away.
func (t *tail) poll() ([]string, error) {
	if t.f == nil {
		if err := t.open(); err != nil {
			return nil, err
		}
	}
	lines, err := t.readNew()
	if err != nil {
		return lines, err
	}
	cur, err := os.Stat(t.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return lines, nil // rotated away and not yet replaced: keep the old one
	case err != nil:
		return lines, fmt.Errorf("stat log file %s: %w", t.path, err)
	case !os.SameFile(cur, t.info):
		// Rotated: finish the old file, then read the new one from its start.
		more, err := t.readNew()
		lines = append(lines, more...)
		if len(t.partial) > 0 {
			lines = append(lines, string(t.partial))
		}
		t.close()
		if err != nil {
			return lines, err
		}
		if err := t.open(); err != nil {
			return lines, err
		}
		more, err = t.readNew()
		return append(lines, more...), err
	case cur.Size() < t.offset:
		// Truncated in place (copytruncate): read again from the start.
		if _, err := t.f.Seek(0, io.SeekStart); err != nil {
			return lines, fmt.Errorf("seek log file %s: %w", t.path, err)
		}
		t.offset, t.partial = 0, nil
		more, err := t.readNew()
		return append(lines, more...), err
	}
	return lines, nil
}

func (t *tail) open() error {
	first := !t.opened
	t.opened = true // a file that appears after the first attempt is new: read it all
	f, err := os.Open(t.path)
	if err != nil {
		return fmt.Errorf("open log file %s: %w", t.path, err)
	}
	info, err := f.Stat()
	if err != nil {
		_ = f.Close() // the stat error is the one to report
		return fmt.Errorf("stat log file %s: %w", t.path, err)
	}
	t.offset, t.partial = 0, nil
	if first && !t.fromStart {
		t.offset = info.Size()
		if _, err := f.Seek(t.offset, io.SeekStart); err != nil {
			_ = f.Close() // the seek error is the one to report
			return fmt.Errorf("seek log file %s: %w", t.path, err)
		}
	}
	t.f, t.info = f, info
	return nil
}

func (t *tail) readNew() ([]string, error) {
	buf := make([]byte, 64*1024)
	var lines []string
	for {
		n, err := t.f.Read(buf)
		if n > 0 {
			t.offset += int64(n)
			data := append(t.partial, buf[:n]...)
			for {
				i := bytes.IndexByte(data, '\n')
				if i < 0 {
					break
				}
				lines = append(lines, string(data[:i]))
				data = data[i+1:]
			}
			t.partial = append([]byte(nil), data...)
		}
		if errors.Is(err, io.EOF) {
			return lines, nil
		}
		if err != nil {
			return lines, fmt.Errorf("read log file %s: %w", t.path, err)
		}
	}
}
