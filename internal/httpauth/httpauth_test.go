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
	if err := os.WriteFile(file, []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tok, _, err := Load("HEALER_TEST_TOKEN", file, gen); err != nil || tok != "from-file" {
		t.Fatalf("file: %q %v", tok, err)
	}
	t.Setenv("HEALER_TEST_TOKEN", "from-env")
	if tok, _, err := Load("HEALER_TEST_TOKEN", file, gen); err != nil || tok != "from-file" {
		t.Fatalf("a token file given as a flag must beat the environment: %q %v", tok, err)
	}
	if tok, src, err := Load("HEALER_TEST_TOKEN", "", gen); err != nil || tok != "from-env" || strings.Contains(src.String(), "from-env") {
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
