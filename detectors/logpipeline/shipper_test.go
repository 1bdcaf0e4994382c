package logpipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

// entry is a registry entry of the log input for inode ino on device 2049.
func entry(source string, ino uint64, offset int64) RegistryEntry {
	return RegistryEntry{
		Key: fmt.Sprintf("filebeat::logs::native::%d-2049", ino), Source: source, Offset: offset,
		Updated: t0.Add(-time.Hour), TTL: -1, Device: 2049, Inode: ino, HasInode: true,
	}
}

func registryOf(entries ...RegistryEntry) *Registry {
	r := &Registry{Entries: map[string]RegistryEntry{}}
	for _, e := range entries {
		r.Entries[e.Key] = e
	}
	return r
}

func stat(path string, ino uint64, size int64, mtime time.Time) FileStat {
	return FileStat{Path: path, Size: size, ModTime: mtime, Device: 2049, Inode: ino, HasInode: true}
}

func TestLagMeterStates(t *testing.T) {
	noInode := func(e RegistryEntry) RegistryEntry {
		e.HasInode, e.Inode, e.Device, e.Key = false, 0, 0, "filestream::x::fingerprint::abc"
		return e
	}
	removed := entry("/var/log/a.log", 10, 600)
	removed.TTL = 0
	second := entry("/var/log/a.log", 10, 400)
	second.Key = "filebeat::logs::3f2a-native::10-2049"
	tests := []struct {
		name  string
		reg   *Registry
		files []FileStat
		want  []string // "file state offset size lag_bytes lag_age"
	}{
		{"behind", registryOf(entry("/var/log/a.log", 10, 100)),
			[]FileStat{stat("/var/log/a.log", 10, 600, t0.Add(-2*time.Minute))},
			[]string{"/var/log/a.log tracked 100 600 500 2m0s"}},
		{"caught up", registryOf(entry("/var/log/a.log", 10, 600)),
			[]FileStat{stat("/var/log/a.log", 10, 600, t0.Add(-2*time.Minute))},
			[]string{"/var/log/a.log tracked 600 600 0 0s"}},
		{"truncated in place: all of it is lag", registryOf(entry("/var/log/a.log", 10, 5000)),
			[]FileStat{stat("/var/log/a.log", 10, 300, t0.Add(-time.Minute))},
			[]string{"/var/log/a.log truncated 5000 300 300 1m0s"}},
		{"rotated: new file at the path, old one found by inode", registryOf(entry("/var/log/a.log", 10, 4000)),
			[]FileStat{stat("/var/log/a.log", 11, 200, t0.Add(-time.Minute)), stat("/var/log/a.log.1", 10, 5000, t0.Add(-3*time.Minute))},
			[]string{"/var/log/a.log rotated 0 200 200 1m0s", "/var/log/a.log.1 tracked 4000 5000 1000 3m0s"}},
		{"untracked", registryOf(entry("/var/log/b.log", 12, 10)),
			[]FileStat{stat("/var/log/a.log", 10, 700, t0.Add(-time.Minute))},
			[]string{"/var/log/a.log untracked 0 700 700 1m0s"}},
		{"an entry marked for removal does not count", registryOf(removed),
			[]FileStat{stat("/var/log/a.log", 10, 600, t0.Add(-time.Minute))},
			[]string{"/var/log/a.log untracked 0 600 600 1m0s"}},
		{"matched by path when the registry has no inode", registryOf(noInode(entry("/var/log/a.log", 0, 100))),
			[]FileStat{stat("/var/log/a.log", 99, 300, t0)},
			[]string{"/var/log/a.log tracked 100 300 200 0s"}},
		{"two entries for one file: the one further along wins", registryOf(entry("/var/log/a.log", 10, 100), second),
			[]FileStat{stat("/var/log/a.log", 10, 500, t0)},
			[]string{"/var/log/a.log tracked 400 500 100 0s"}},
		{"a modification time ahead of the clock counts as now", registryOf(entry("/var/log/a.log", 10, 0)),
			[]FileStat{stat("/var/log/a.log", 10, 500, t0.Add(time.Hour))},
			[]string{"/var/log/a.log tracked 0 500 500 0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, l := range NewLagMeter().Measure(t0, tt.reg, tt.files) {
				got = append(got, fmt.Sprintf("%s %s %d %d %d %s", l.File, l.State, l.Offset, l.Size, l.LagBytes, l.LagAge))
				if l.State == FileTracked && !l.OffsetUpdated.Equal(t0.Add(-time.Hour)) {
					t.Errorf("%s: offset updated %s, want the entry's time", l.File, l.OffsetUpdated)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("lags\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestLagMeterAge(t *testing.T) {
	type step struct {
		at     time.Duration // since t0
		ino    uint64
		size   int64
		mtime  time.Duration // since t0
		offset int64
		want   time.Duration // lag age
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"age grows while the shipper is stuck and follows the offset", []step{
			{at: 0, ino: 10, size: 1000, mtime: 0, offset: 0, want: 0},
			{at: time.Minute, ino: 10, size: 2000, mtime: time.Minute, offset: 0, want: time.Minute},
			{at: 2 * time.Minute, ino: 10, size: 3000, mtime: 2 * time.Minute, offset: 0, want: 2 * time.Minute},
			// the bytes written by t0 are shipped; the oldest left were there by t0+1m
			{at: 3 * time.Minute, ino: 10, size: 3000, mtime: 2 * time.Minute, offset: 1500, want: 2 * time.Minute},
			{at: 4 * time.Minute, ino: 10, size: 3000, mtime: 2 * time.Minute, offset: 3000, want: 0},
			// new bytes after catching up start a new age
			{at: 5 * time.Minute, ino: 10, size: 3500, mtime: 5 * time.Minute, offset: 3000, want: 0},
			{at: 6 * time.Minute, ino: 10, size: 3500, mtime: 5 * time.Minute, offset: 3000, want: time.Minute},
		}},
		{"first seen behind: the age starts at the last write", []step{
			{at: 10 * time.Minute, ino: 10, size: 1000, mtime: 0, offset: 0, want: 10 * time.Minute},
			{at: 11 * time.Minute, ino: 10, size: 1200, mtime: 11 * time.Minute, offset: 0, want: 11 * time.Minute},
		}},
		{"truncation starts the age again", []step{
			{at: 0, ino: 10, size: 5000, mtime: 0, offset: 100, want: 0},
			{at: 5 * time.Minute, ino: 10, size: 100, mtime: 5 * time.Minute, offset: 5000, want: 0},
			{at: 7 * time.Minute, ino: 10, size: 100, mtime: 5 * time.Minute, offset: 5000, want: 2 * time.Minute},
		}},
		{"a new file at the path starts the age again", []step{
			{at: 0, ino: 10, size: 5000, mtime: 0, offset: 100, want: 0},
			{at: 5 * time.Minute, ino: 11, size: 9000, mtime: 4 * time.Minute, offset: 0, want: time.Minute},
		}},
		{"a modification time going back does not make older bytes", []step{
			{at: 0, ino: 10, size: 1000, mtime: 0, offset: 0, want: 0},
			{at: time.Minute, ino: 10, size: 2000, mtime: -time.Hour, offset: 1500, want: time.Minute},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewLagMeter()
			for i, s := range tt.steps {
				reg := registryOf(entry("/var/log/a.log", 10, s.offset))
				lags := m.Measure(t0.Add(s.at), reg, []FileStat{stat("/var/log/a.log", s.ino, s.size, t0.Add(s.mtime))})
				if len(lags) != 1 || lags[0].LagAge != s.want {
					t.Fatalf("step %d: lags %+v, want age %s", i, lags, s.want)
				}
			}
		})
	}
}

func TestLagMeterBoundsHistory(t *testing.T) {
	m := NewLagMeter()
	reg := registryOf(entry("/var/log/a.log", 10, 0))
	var l []FileLag
	for i := range 3 * maxMarks {
		at := t0.Add(time.Duration(i) * time.Second)
		l = m.Measure(at, reg, []FileStat{stat("/var/log/a.log", 10, int64(100*(i+1)), at)})
	}
	if got := len(m.growth["/var/log/a.log"].marks); got > maxMarks {
		t.Errorf("%d growth records kept, want at most %d", got, maxMarks)
	}
	if want := time.Duration(3*maxMarks-1) * time.Second; l[0].LagAge != want {
		t.Errorf("age %s after trimming the history, want %s: the oldest record must stay", l[0].LagAge, want)
	}
	m.Measure(t0, reg, nil)
	if len(m.growth) != 0 {
		t.Errorf("history of a file no longer measured is kept")
	}
}

func TestStatFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int, mtime time.Time) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	write("api.log", 10, now)
	write("batch.log", 20, now.Add(-2*time.Hour))
	write("batch-2.log", 25, now)
	write("api.log.1.gz", 30, now)
	write("notes.txt", 40, now.Add(-2*time.Hour))
	if err := os.Mkdir(filepath.Join(dir, "dir.log"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling.log")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "loop.log"), filepath.Join(dir, "loop.log")); err != nil {
		t.Fatal(err)
	}
	rules := []FileRule{
		{Glob: filepath.Join(dir, "*.log"), Exclude: []string{filepath.Join(dir, "batch*")}},
		{Glob: filepath.Join(dir, "*"), Exclude: []string{"*.gz"}, IgnoreOlder: time.Hour},
		{Glob: filepath.Join(dir, "*")},
	}
	files, failed := statFiles(now, rules)
	var got []string
	for _, f := range files {
		got = append(got, fmt.Sprintf("%s rule %d size %d", filepath.Base(f.Path), f.rule, f.Size))
		fi, err := os.Stat(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); !f.HasInode || f.Inode != st.Ino || f.Device != uint64(st.Dev) { //nolint:unconvert // Dev is not uint64 everywhere
			t.Errorf("%s: identity %d-%d (%v), want %d-%d", f.Path, f.Inode, f.Device, f.HasInode, st.Ino, st.Dev)
		}
	}
	slices.Sort(got)
	want := []string{
		"api.log rule 0 size 10",
		"api.log.1.gz rule 2 size 30", // excluded by rule 1 by its name, matched by rule 2
		"batch-2.log rule 1 size 25",  // excluded by rule 0
		// batch.log, excluded by rule 0, and notes.txt belong to rule 1,
		// which ignores them as too old; rule 2 does not take them
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("files\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(failed) != 1 || failed[filepath.Join(dir, "loop.log")] == nil {
		t.Errorf("failed %v, want only the symlink loop", failed)
	}
}
