// Package sitetest runs a real Campfire site for the Go tests: the
// repository's `campfire site` command (bin/campfire.mjs under node, as a
// user runs it) on a loopback port, with a data folder of its own.
package sitetest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Token is the admin token every test site accepts, for a project admin.
const Token = "go-test-token"

// Site is a running `campfire site` process.
type Site struct {
	// Address is 127.0.0.1:<port>.
	Address string
	// DataDir holds its jobs; a restart keeps it.
	DataDir string

	t       testing.TB
	args    []string
	command *exec.Cmd
	exited  chan struct{}
	mu      sync.Mutex
	output  strings.Builder
}

// Root is the repository root: the folder above clients/go holding bin/campfire.mjs.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "bin", "campfire.mjs")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no bin/campfire.mjs above %s", dir)
		}
		dir = parent
	}
}

// Start runs a site on 127.0.0.1:0 with the test token, 100 ms heartbeats
// (the agent's liveness is exercised, not waited for) and extra arguments;
// it is killed when the test ends.
func Start(t testing.TB, extra ...string) *Site {
	t.Helper()
	site := &Site{t: t, DataDir: t.TempDir()}
	site.args = append([]string{
		"--data-dir", site.DataDir, "--tokens", Token + "=go-admin:admin",
		"--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms", "3000",
		"--schedule-interval-ms", "100", "--schedule-max-interval-ms", "500", "--schedule-attempts", "100",
	}, extra...)
	site.start("127.0.0.1:0")
	t.Cleanup(site.Kill)
	return site
}

func (s *Site) start(listen string) {
	s.t.Helper()
	root, err := Root()
	if err != nil {
		s.t.Fatal(err)
	}
	command := exec.Command("node", append([]string{filepath.Join(root, "bin", "campfire.mjs"), "site", "--listen", listen}, s.args...)...)
	command.Env = append(os.Environ(), "LOG_FORMAT=json", "LOG_LEVEL=info")
	stdout, err := command.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	command.Stderr = &lockedWriter{site: s}
	if err := command.Start(); err != nil {
		s.t.Fatalf("starting the site: %v", err)
	}
	s.command, s.exited = command, make(chan struct{})
	listening := make(chan int, 1)
	go func(exited chan struct{}) {
		scanner := bufio.NewScanner(stdout)
		scanner.Buffer(make([]byte, 1<<20), 1<<20)
		for scanner.Scan() {
			line := scanner.Text()
			s.mu.Lock()
			s.output.WriteString(line + "\n")
			s.mu.Unlock()
			var record struct {
				Msg  string `json:"msg"`
				Port int    `json:"port"`
			}
			if json.Unmarshal([]byte(line), &record) == nil && record.Msg == "site listening" {
				listening <- record.Port
			}
		}
		command.Wait()
		close(exited)
	}(s.exited)
	select {
	case port := <-listening:
		s.Address = fmt.Sprintf("127.0.0.1:%d", port)
	case <-s.exited:
		s.t.Fatalf("the site exited before listening:\n%s", s.Output())
	case <-time.After(60 * time.Second):
		s.Kill()
		s.t.Fatalf("the site did not listen within 60 s:\n%s", s.Output())
	}
}

// Kill ends the site at once (SIGKILL), as a crash would.
func (s *Site) Kill() {
	if s.command != nil && s.command.Process != nil {
		s.command.Process.Kill()
		<-s.exited
	}
}

// Restart kills the site and starts it again on the same port and data folder.
func (s *Site) Restart() {
	s.t.Helper()
	s.Kill()
	s.start(s.Address)
}

// Output is what the site printed so far (JSON log lines and stderr).
func (s *Site) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.output.String()
}

type lockedWriter struct{ site *Site }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.site.mu.Lock()
	defer w.site.mu.Unlock()
	return w.site.output.Write(p)
}

// Provision runs `campfire provision` on examples/project.yaml (a site on
// localhost and 127.0.0.1; clients hospital-a and hospital-b; the project
// admin alice@a.org) and returns the folder holding one kit per participant.
func Provision(t testing.TB) string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "kits")
	command := exec.Command("node", filepath.Join(root, "bin", "campfire.mjs"), "provision", filepath.Join(root, "examples", "project.yaml"), "--out", out)
	if output, err := command.CombinedOutput(); err != nil {
		t.Fatalf("campfire provision: %v\n%s", err, output)
	}
	return out
}
