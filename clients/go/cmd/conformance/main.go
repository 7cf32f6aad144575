// Command conformance is the Go runner of Campfire's conformance suite
// (test/conformance/ in the repository): `conformance <scenario>` plays the
// client side of one scenario against the site in CAMPFIRE_SITE, with the
// agent and admin packages where a library would do the step and the
// generated stubs where a scenario needs what no library would send. It
// prints one JSON line per observation on stdout; logs go to stderr. Exit 0
// when the runner saw what the scenario says, 1 with a reason otherwise.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// scenarioTimeout is below the harness's 30 s limit, so a stuck runner says why.
const scenarioTimeout = 28 * time.Second

var scenarios = map[string]func(context.Context) error{
	"agent.hello":           agentHello,
	"agent.task-result":     serveUntilBye,
	"agent.large-result":    serveUntilBye,
	"agent.abort":           serveUntilBye,
	"agent.bye":             serveUntilBye,
	"agent.reconnect":       serveUntilBye,
	"agent.site-restart":    serveUntilBye,
	"agent.duplicate-stale": duplicateStale,
	"agent.errors":          agentErrors,
	"admin.lifecycle":       adminLifecycle,
	"admin.errors":          adminErrors,
}

func main() {
	name := ""
	if len(os.Args) == 2 {
		name = os.Args[1]
	}
	run, ok := scenarios[name]
	if !ok {
		known := make([]string, 0, len(scenarios))
		for scenario := range scenarios {
			known = append(known, scenario)
		}
		sort.Strings(known)
		fmt.Fprintf(os.Stderr, "usage: conformance <scenario>; known: %s\n", strings.Join(known, ", "))
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s failed: %v\n", name, err)
		os.Exit(1)
	}
}

var stdout sync.Mutex

// emit prints one event as a JSON line, at once.
func emit(event string, fields map[string]any) {
	line := map[string]any{"event": event}
	for key, value := range fields {
		line[key] = value
	}
	text, err := json.Marshal(line)
	if err != nil {
		panic(err)
	}
	stdout.Lock()
	defer stdout.Unlock()
	os.Stdout.Write(append(text, '\n'))
}

// env reads a variable the harness must set.
func env(name string) string {
	value := os.Getenv(name)
	if value == "" {
		fmt.Fprintf(os.Stderr, "%s is not set\n", name)
		os.Exit(2)
	}
	return value
}
