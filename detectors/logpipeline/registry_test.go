package logpipeline

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// describe renders entries as "key source offset inode-device updated ttl"
// lines, sorted.
func describe(entries map[string]RegistryEntry) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(entries)) {
		e := entries[k]
		id := "-"
		if e.HasInode {
			id = fmt.Sprintf("%d-%d", e.Inode, e.Device)
		}
		upd := "-"
		if !e.Updated.IsZero() {
			upd = e.Updated.Format(time.RFC3339Nano)
		}
		if k != e.Key {
			out = append(out, "key mismatch "+k+" "+e.Key)
		}
		out = append(out, fmt.Sprintf("%s %s %d %s %s %s", k, e.Source, e.Offset, id, upd, e.TTL))
	}
	return out
}

func TestReadRegistry(t *testing.T) {
	const (
		api    = "filebeat::logs::native::1835021-66305"
		worker = "filebeat::logs::native::1835022-66305"
	)
	tests := []struct {
		dir        string
		checkpoint string
		active     string
		txid       uint64
		ops        int
		entries    []string
		logErr     string
		err        string
	}{
		{
			dir:  "log-only",
			txid: 7, ops: 7,
			entries: []string{
				// set three times; the eighth operation is still being written
				api + " /var/log/app/api.log 1048576 1835021-66305 2026-11-22T03:14:07.123456Z -1ns",
				// written with a +08:00 zone in the timestamp
				worker + " /var/log/app/worker.log 77231 1835022-66305 2026-11-22T11:14:08.5Z -1ns",
				// old.log was set, then removed
			},
		},
		{
			dir:        "checkpoint-and-log",
			checkpoint: "1207.json", active: "1207.json",
			txid: 1210, ops: 3, // 1206 and 1207 are older than the checkpoint
			entries: []string{
				api + " /var/log/app/api.log 3145728 1835021-66305 2026-11-22T03:21:00Z -1ns",
				worker + " /var/log/app/worker.log 90000 1835022-66305 2026-11-22T03:20:00Z -1ns",
				// api.log.1 removed by operation 1209; the journald cursor is no file
				"filebeat::logs::native::1835025-66305 /var/log/app/gone.log 100 1835025-66305 2026-11-22T01:00:00Z 0s",
				"filebeat::logs::native::1835026-66305 /var/log/app/new.log 512 1835026-66305 2026-11-22T03:21:30Z -1ns",
			},
		},
		{
			dir:        "stale-active",
			checkpoint: "1300.json", active: "1207.json",
			txid: 1301, ops: 1,
			entries: []string{api + " /var/log/app/api.log 300 1835021-66305 2026-11-22T03:31:00Z -1ns"},
		},
		{
			dir:        "filestream",
			checkpoint: "42.json", active: "42.json",
			txid: 44, ops: 2,
			entries: []string{
				"filestream::containers::fingerprint::4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90 " +
					"/var/log/containers/db-0_default_db-4567.log 1234 - 2026-11-22T03:20:00Z -1ns",
				"filestream::containers::native::2097153-2049 /var/log/containers/api-7d9f_default_api-0123.log 131072 2097153-2049 2026-11-22T03:20:05Z -1ns",
			},
		},
		{
			dir:  "corrupt-log",
			txid: 1, ops: 1,
			entries: []string{api + " /var/log/app/api.log 100 1835021-66305 2026-11-22T03:10:00Z -1ns"},
			logErr:  "log.json: operation 2: invalid character ','",
		},
		{
			dir:  "gap",
			txid: 1, ops: 1,
			entries: []string{api + " /var/log/app/api.log 100 1835021-66305 2026-11-22T03:10:00Z -1ns"},
			logErr:  "operation 2: id 5 after 1: operation out of sequence",
		},
		{dir: "corrupt-checkpoint", err: "checkpoint 3.json: decode checkpoint: unexpected EOF"},
		{dir: "future-version", err: `meta.json: store version "2", only "1" is understood`},
		{dir: "no-such-registry", err: "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			dir := filepath.Join("testdata", "registry", tt.dir)
			reg, err := ReadRegistry(dir)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), dir) {
					t.Fatalf("ReadRegistry() = %v, want an error naming %s and saying %q", err, dir, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if reg.Checkpoint != tt.checkpoint || reg.Active != tt.active || reg.TxID != tt.txid || reg.Ops != tt.ops {
				t.Errorf("checkpoint %q active %q txid %d ops %d, want %q %q %d %d",
					reg.Checkpoint, reg.Active, reg.TxID, reg.Ops, tt.checkpoint, tt.active, tt.txid, tt.ops)
			}
			if got := describe(reg.Entries); !slices.Equal(got, tt.entries) {
				t.Errorf("entries\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.entries, "\n"))
			}
			switch {
			case tt.logErr == "" && reg.LogErr != nil:
				t.Errorf("LogErr = %v, want nil", reg.LogErr)
			case tt.logErr != "" && (reg.LogErr == nil || !strings.Contains(reg.LogErr.Error(), tt.logErr)):
				t.Errorf("LogErr = %v, want %q", reg.LogErr, tt.logErr)
			}
		})
	}
}

func TestReadRegistryNotARegistry(t *testing.T) {
	dir := t.TempDir()
	_, err := ReadRegistry(dir)
	if err == nil || !strings.Contains(err.Error(), "not a filebeat registry") {
		t.Fatalf("ReadRegistry(empty dir) = %v, want it refused", err)
	}
	_, err = ReadRegistry(filepath.Join(dir, "missing"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadRegistry(missing dir) = %v, want fs.ErrNotExist", err)
	}
}

func TestApplyLog(t *testing.T) {
	set := func(id int, key string, offset int) string {
		return fmt.Sprintf(`{"op":"set","id":%d}`+"\n"+`{"k":%q,"v":{"source":"/var/log/%s.log","offset":%d,"ttl":-1,"FileStateOS":{"inode":%d,"device":2049}}}`+"\n",
			id, key, key, offset, 100+len(key))
	}
	remove := func(id int, key string) string {
		return fmt.Sprintf(`{"op":"remove","id":%d}`+"\n"+`{"k":%q}`+"\n", id, key)
	}
	tests := []struct {
		name    string
		after   uint64
		log     string
		want    map[string]int64 // key -> offset
		last    uint64
		ops     int
		wantErr string
	}{
		{name: "empty", want: map[string]int64{"a": 1}},
		{name: "sets and a remove", log: set(1, "b", 10) + set(2, "b", 20) + remove(3, "a"),
			want: map[string]int64{"b": 20}, last: 3, ops: 3},
		{name: "removing an unknown key", log: remove(1, "zzz"), want: map[string]int64{"a": 1}, last: 1, ops: 1},
		{name: "operations of the checkpoint are skipped", after: 10, log: set(9, "a", 99) + set(10, "a", 100) + set(11, "b", 5),
			want: map[string]int64{"a": 1, "b": 5}, last: 11, ops: 1},
		{name: "action written, body not yet", log: set(1, "b", 10) + `{"op":"set","id":2}` + "\n",
			want: map[string]int64{"a": 1, "b": 10}, last: 1, ops: 1},
		{name: "body half written", log: set(1, "b", 10) + `{"op":"set","id":2}` + "\n" + `{"k":"b","v":{"sour`,
			want: map[string]int64{"a": 1, "b": 10}, last: 1, ops: 1},
		{name: "action half written", log: set(1, "b", 10) + `{"op":"se`,
			want: map[string]int64{"a": 1, "b": 10}, last: 1, ops: 1},
		{name: "unknown operation", log: set(1, "b", 10) + `{"op":"truncate","id":2}` + "\n{}\n" + set(3, "b", 30),
			want: map[string]int64{"a": 1, "b": 10}, last: 1, ops: 1, wantErr: `operation 2: "truncate"`},
		{name: "operation without an id", log: `{"op":"set"}` + "\n" + `{"k":"b","v":{}}`,
			want: map[string]int64{"a": 1}, wantErr: "not a set or remove operation"},
		{name: "gap", log: set(2, "b", 10), want: map[string]int64{"a": 1}, wantErr: "id 2 after 0"},
		{name: "a set of something that is no file removes it", log: `{"op":"set","id":1}` + "\n" + `{"k":"a","v":{"cursor":{"position":"x"}}}`,
			want: map[string]int64{}, last: 1, ops: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := map[string]RegistryEntry{"a": {Key: "a", Source: "/var/log/a.log", Offset: 1}}
			last, ops, err := ApplyLog(strings.NewReader(tt.log), tt.after, entries)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("ApplyLog() error %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("ApplyLog() error %v, want %q", err, tt.wantErr)
			}
			got := map[string]int64{}
			for k, e := range entries {
				got[k] = e.Offset
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("entries %v, want %v", got, tt.want)
			}
			wantLast := tt.last
			if wantLast == 0 {
				wantLast = tt.after
			}
			if last != wantLast || ops != tt.ops {
				t.Errorf("last %d ops %d, want %d %d", last, ops, wantLast, tt.ops)
			}
		})
	}
}

func TestDecodeTime(t *testing.T) {
	tests := []struct {
		raw  string
		want string
	}{
		{`[281470681743360,1795317000]`, "2026-11-22T03:10:00Z"},        // UTC
		{`[281470805199360,1795317247]`, "2026-11-22T03:14:07.123456Z"}, // UTC with nanoseconds
		{`[2062084302080,1795346048]`, "2026-11-22T11:14:08.5Z"},        // a +08:00 zone: same instant
		{`"2026-11-22T03:10:00+01:00"`, "2026-11-22T02:10:00Z"},         // RFC 3339
		{`[72057594037927936,1795317000]`, "0001-01-01T00:00:00Z"},      // unknown encoding version
		{`[1,2,3]`, "0001-01-01T00:00:00Z"}, {`null`, "0001-01-01T00:00:00Z"}, {``, "0001-01-01T00:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			if got := decodeTime([]byte(tt.raw)).Format(time.RFC3339Nano); got != tt.want {
				t.Errorf("decodeTime(%s) = %s, want %s", tt.raw, got, tt.want)
			}
		})
	}
}
