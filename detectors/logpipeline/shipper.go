package logpipeline

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FileState says how a shipped file relates to the shipper's registry.
type FileState string

// File states.
const (
	// FileTracked is a file the registry has: its lag is size - offset.
	FileTracked FileState = "tracked"
	// FileTruncated is a file smaller than the registry's offset: it was
	// truncated in place (logrotate's copytruncate) after the shipper read
	// it. The shipper starts it again from 0, so all of it is lag.
	FileTruncated FileState = "truncated"
	// FileRotated is a file at a path the registry has for another file
	// (another inode): the old file was rotated away and the shipper has
	// not opened the new one yet. All of it is lag.
	FileRotated FileState = "rotated"
	// FileUntracked is a file the registry does not have at all: the
	// shipper has not opened it. All of it is lag.
	FileUntracked FileState = "untracked"
)

// FileStat is what the file system says about one file.
type FileStat struct {
	Path    string
	Size    int64
	ModTime time.Time
	// Device and Inode identify the file when HasInode is set.
	Device, Inode uint64
	HasInode      bool
}

// FileLag is the measured lag of one file.
type FileLag struct {
	File  string
	State FileState
	// Offset is the registry's offset, 0 when the file is not in the
	// registry.
	Offset int64
	Size   int64
	// LagBytes is the number of bytes not shipped yet.
	LagBytes int64
	// LagAge is how long the oldest unshipped byte has waited, at least
	// (see LagMeter).
	LagAge time.Duration
	// OffsetUpdated is when the shipper last updated the file's entry;
	// zero when unknown.
	OffsetUpdated time.Time
	ModTime       time.Time
	Device, Inode uint64
}

// maxMarks bounds the growth remembered per file.
const maxMarks = 64

// LagMeter computes the lag of files from the shipper's registry and the
// files' sizes, and estimates how long their unshipped bytes have waited.
// It is not safe for concurrent use.
//
// The age of the oldest unshipped byte is estimated from the growth of the
// file seen across measurements. Each measurement that finds the file
// bigger than before records its size and modification time: every byte
// below that size was written by that time. The oldest unshipped byte (the
// one at the registry's offset) lies below the first recorded size beyond
// the offset, so it has waited at least since that record's time. The
// estimate is a lower bound, short by at most the time between two
// measurements. For a file already behind when it is first measured (the
// detector just started), the first record is the file's modification
// time, so the age starts from the last write and catches up over the
// following measurements. Truncation, or a new file at the path (another
// inode), starts the records again.
type LagMeter struct {
	growth map[string]*growth
}

// growth is the growth of one file seen across measurements.
type growth struct {
	id    fileID
	hasID bool
	marks []mark
}

// mark says the file had size bytes by time at.
type mark struct {
	size int64
	at   time.Time
}

// NewLagMeter returns a meter with no history.
func NewLagMeter() *LagMeter { return &LagMeter{growth: map[string]*growth{}} }

// Measure returns the lag of each file at now. Files not given are
// forgotten.
func (m *LagMeter) Measure(now time.Time, reg *Registry, files []FileStat) []FileLag {
	ix := reg.index()
	seen := make(map[string]bool, len(files))
	lags := make([]FileLag, 0, len(files))
	for _, f := range files {
		seen[f.Path] = true
		l := FileLag{File: f.Path, Size: f.Size, ModTime: f.ModTime, Device: f.Device, Inode: f.Inode}
		e, found := lookup(ix, f)
		shipped := int64(0)
		switch {
		case !found && len(ix.bySource[f.Path]) > 0:
			l.State = FileRotated
		case !found:
			l.State = FileUntracked
		case f.Size < e.Offset:
			l.State, l.Offset, l.OffsetUpdated = FileTruncated, e.Offset, e.Updated
		default:
			l.State, l.Offset, l.OffsetUpdated = FileTracked, e.Offset, e.Updated
			shipped = e.Offset
		}
		l.LagBytes = f.Size - shipped
		g := m.growth[f.Path]
		if g == nil {
			g = &growth{}
			m.growth[f.Path] = g
		}
		l.LagAge = g.age(now, f, shipped)
		lags = append(lags, l)
	}
	for p := range m.growth {
		if !seen[p] {
			delete(m.growth, p)
		}
	}
	return lags
}

// lookup finds the registry entry of f: by device and inode, or by path
// when either side lacks the inode.
func lookup(ix registryIndex, f FileStat) (RegistryEntry, bool) {
	if f.HasInode {
		if e, ok := ix.byID[fileID{f.Device, f.Inode}]; ok {
			return e, true
		}
	}
	var best RegistryEntry
	found := false
	for _, e := range ix.bySource[f.Path] {
		if e.HasInode && f.HasInode {
			continue // another file that once had this path
		}
		if !found || e.Offset > best.Offset {
			best, found = e, true
		}
	}
	return best, found
}

// age records the file's growth and returns how long the byte at offset
// shipped has waited; 0 when nothing is unshipped.
func (g *growth) age(now time.Time, f FileStat, shipped int64) time.Duration {
	id := fileID{f.Device, f.Inode}
	n := len(g.marks)
	if g.hasID != f.HasInode || g.id != id || (n > 0 && f.Size < g.marks[n-1].size) {
		g.id, g.hasID, g.marks, n = id, f.HasInode, g.marks[:0], 0
	}
	if n == 0 || f.Size > g.marks[n-1].size {
		at := f.ModTime
		if at.After(now) {
			at = now // a clock ahead of ours
		}
		if n > 0 && at.Before(g.marks[n-1].at) {
			at = g.marks[n-1].at
		}
		g.marks = append(g.marks, mark{size: f.Size, at: at})
	}
	i := 0
	for i < len(g.marks) && g.marks[i].size <= shipped {
		i++
	}
	g.marks = append(g.marks[:0], g.marks[i:]...)
	if len(g.marks) > maxMarks {
		// Merge the second record into the third: the oldest, which gives
		// the age, stays exact; the merged bytes look younger, never older.
		g.marks = append(g.marks[:1], g.marks[2:]...)
	}
	if len(g.marks) == 0 {
		return 0
	}
	return max(0, now.Sub(g.marks[0].at))
}

// matchedFile is a file matched by the rule at index rule.
type matchedFile struct {
	FileStat
	rule int
}

// statFiles finds the files of the rules and stats them. A file belongs
// to the first rule whose glob matches it and whose Exclude does not.
// Files that vanish before they are stat'ed, that are not regular files or
// that are older than their rule's IgnoreOlder are left out; files that
// cannot be stat'ed for another reason are returned in failed.
func statFiles(now time.Time, rules []FileRule) (files []matchedFile, failed map[string]error) {
	seen := map[string]bool{}
	failed = map[string]error{}
	for ri, r := range rules {
		paths, _ := filepath.Glob(r.Glob) // the pattern was validated
	next:
		for _, p := range paths {
			if seen[p] {
				continue
			}
			for _, x := range r.Exclude {
				if excluded(x, p) {
					continue next
				}
			}
			seen[p] = true
			fi, err := os.Stat(p)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				continue
			case err != nil:
				failed[p] = err
				continue
			case !fi.Mode().IsRegular():
				continue
			case r.IgnoreOlder > 0 && now.Sub(fi.ModTime()) > r.IgnoreOlder:
				continue
			}
			f := FileStat{Path: p, Size: fi.Size(), ModTime: fi.ModTime()}
			f.Device, f.Inode, f.HasInode = fileIdentity(fi)
			files = append(files, matchedFile{FileStat: f, rule: ri})
		}
	}
	return files, failed
}

// excluded reports whether pattern x excludes path p: a pattern with a
// separator is matched against the whole path, one without against the
// file name.
func excluded(x, p string) bool {
	if !strings.ContainsRune(x, filepath.Separator) {
		p = filepath.Base(p)
	}
	ok, _ := filepath.Match(x, p)
	return ok
}

// over reports whether l breaks r's thresholds.
func (r *FileRule) over(l FileLag) bool {
	return (r.MaxBytes > 0 && l.LagBytes > r.MaxBytes) || (r.MaxAge > 0 && l.LagAge > r.MaxAge)
}
