package registry

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ketnoi/ketnoi/internal/logging/logtest"
)

// logTo makes cfg log as text, at every level, to a new buffer.
func logTo(cfg *Config) *logtest.Buffer {
	b := &logtest.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return b
}

// ResumeAbove on a state file that holds no configuration, missing, empty
// or a bbolt file the registry never published from, is refused: it would
// publish an empty federation above the version every node holds, and the
// nodes would take it. A missing file is not created.
func TestResumeAboveRefusesFreshStateFile(t *testing.T) {
	f := newFixture(t)
	f.close()
	dir := t.TempDir()
	emptyBolt := filepath.Join(dir, "empty-bolt.db")
	db, err := bolt.Open(emptyBolt, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.db")

	cfg := f.cfg
	cfg.ResumeAbove = 12
	for _, path := range []string{missing, empty, emptyBolt} {
		reg, err := Open(path, cfg)
		if err == nil {
			v := decode(t, reg.Configuration()).GetVersion()
			reg.Close()
			t.Errorf("Open(%s) with ResumeAbove 12 succeeded, publishing version %d", filepath.Base(path), v)
			continue
		}
		want := "--resume-above is for a restored state file, but " + path + " holds no configuration"
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%s) with ResumeAbove 12: %v, want %q", filepath.Base(path), err, want)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused Open left %s behind: %v", filepath.Base(missing), err)
	}
}

// ResumeAbove at or below the stored version changes nothing, as on a
// restart that keeps the flag, and says so once at the INFO level.
func TestResumeAboveIgnoredIsLogged(t *testing.T) {
	f := newFixture(t)
	f.populate(t, testContext(t), f.admin(t))
	stored := decode(t, f.reg.Configuration()).GetVersion()

	for _, above := range []uint64{stored - 1, stored} {
		f.cfg.ResumeAbove = above
		logs := logTo(&f.cfg)
		f.restart(t)
		if v := decode(t, f.reg.Configuration()).GetVersion(); v != stored {
			t.Errorf("version after a start with ResumeAbove %d = %d, want %d unchanged", above, v, stored)
		}
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		var ignored []string
		for _, l := range lines {
			if strings.Contains(l, "resume above ignored") {
				ignored = append(ignored, l)
			}
		}
		want := []string{"level=INFO", "the state file holds a configuration version at or above it",
			"version=" + itoa(stored), "resume_above=" + itoa(above)}
		if len(ignored) != 1 {
			t.Errorf("ResumeAbove %d at or below version %d logged %d ignore lines, want 1:\n%s",
				above, stored, len(ignored), logs)
			continue
		}
		for _, w := range want {
			if !strings.Contains(ignored[0], w) {
				t.Errorf("ignore line lacks %q: %s", w, ignored[0])
			}
		}
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
