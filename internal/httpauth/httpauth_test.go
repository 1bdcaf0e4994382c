package httpauth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBearer(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	tests := []struct {
		name, token, header string
		want                int
	}{
		{"right token", "s3cret", "Bearer s3cret", http.StatusNoContent},
		{"scheme is case-insensitive", "s3cret", "bearer s3cret", http.StatusNoContent},
		{"missing header", "s3cret", "", http.StatusUnauthorized},
		{"wrong token", "s3cret", "Bearer nope", http.StatusUnauthorized},
		{"prefix of the token", "s3cret", "Bearer s3c", http.StatusUnauthorized},
		{"basic auth", "s3cret", "Basic czNjcmV0", http.StatusUnauthorized},
		{"empty configured token refuses all", "", "Bearer ", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			Bearer(tt.token, ok).ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d", rec.Code, tt.want)
			}
			if rec.Code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if tt.token != "" && strings.Contains(rec.Body.String(), tt.token) {
				t.Error("the token leaked into the response")
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	gen := filepath.Join(dir, "sub", "api-token")

	t.Setenv("HEALER_TEST_TOKEN", "")
	tok, src, err := Load("HEALER_TEST_TOKEN", "", gen)
	if err != nil || len(tok) != 64 || src.From != "generated" {
		t.Fatalf("generate: %q %+v %v", tok, src, err)
	}
	fi, err := os.Stat(gen)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated file: %v %v", fi, err)
	}
	again, src, err := Load("HEALER_TEST_TOKEN", "", gen)
	if err != nil || again != tok || src.From != "file" {
		t.Fatalf("second start must reuse the generated token: %q %+v %v", again, src, err)
	}

	file := filepath.Join(dir, "given")
	if err := os.WriteFile(file, []byte("  from-file-0123456789abcdef0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, _, err := Load("HEALER_TEST_TOKEN", file, gen); err != nil || tok != "from-file-0123456789abcdef0123456789" {
		t.Fatalf("file: %q %v", tok, err)
	}
	t.Setenv("HEALER_TEST_TOKEN", "from-env-0123456789abcdef0123456789ab")
	if tok, _, err := Load("HEALER_TEST_TOKEN", file, gen); err != nil || tok != "from-file-0123456789abcdef0123456789" {
		t.Fatalf("a token file given as a flag must beat the environment: %q %v", tok, err)
	}
	if tok, src, err := Load("HEALER_TEST_TOKEN", "", gen); err != nil || tok != "from-env-0123456789abcdef0123456789ab" || strings.Contains(src.String(), "from-env") {
		t.Fatalf("env: %q %q %v", tok, src, err)
	}
	t.Setenv("HEALER_TEST_TOKEN", "")
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	if _, _, err := Load("HEALER_TEST_TOKEN", empty, gen); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
	if _, _, err := Load("HEALER_TEST_TOKEN", filepath.Join(dir, "missing"), gen); err == nil {
		t.Fatal("missing token file accepted")
	}
}

// A configured token shorter than 32 bytes is refused, from a file or the
// environment, with an error that names where it is but not what it is.
func TestLoadRefusesShortTokens(t *testing.T) {
	dir := t.TempDir()
	short := "x"
	file := filepath.Join(dir, "short")
	if err := os.WriteFile(file, []byte(short+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load("HEALER_TEST_TOKEN", file, filepath.Join(dir, "gen")); err == nil || !strings.Contains(err.Error(), "want at least 32") || !strings.Contains(err.Error(), file) {
		t.Errorf("short token file: %v", err)
	}
	t.Setenv("HEALER_TEST_TOKEN", "short-but-not-one-char")
	_, _, err := Load("HEALER_TEST_TOKEN", "", filepath.Join(dir, "gen"))
	if err == nil || !strings.Contains(err.Error(), "$HEALER_TEST_TOKEN") || strings.Contains(err.Error(), "short-but-not-one-char") {
		t.Errorf("short token in the environment: %v", err)
	}
	t.Setenv("HEALER_TEST_TOKEN", strings.Repeat("k", 32))
	if tok, _, err := Load("HEALER_TEST_TOKEN", "", filepath.Join(dir, "gen")); err != nil || len(tok) != 32 {
		t.Errorf("32-byte token: %q, %v", tok, err)
	}
}
