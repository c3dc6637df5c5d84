package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// promtool is the promtool make test fetches (PROMTOOL) or one on PATH.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (make test fetches it)")
	}
	return p
}

// The alert rules are valid and fire as their unit tests say.
func TestAlertRules(t *testing.T) {
	pt := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "monitoring/calyx-alerts.yaml"},
		{"test", "rules", "monitoring/calyx-alerts_test.yaml"},
	} {
		if out, err := exec.Command(pt, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

type dashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
}

// The dashboard is Grafana JSON whose every query is valid PromQL (checked
// by promtool as recording rules, with Grafana's variables filled in).
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("monitoring/calyx-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("calyx-dashboard.json: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Templating.List) == 0 {
		t.Errorf("dashboard lacks a uid, title or variables")
	}
	ids := map[int]bool{}
	var rules strings.Builder
	rules.WriteString("groups:\n- name: dashboard\n  rules:\n")
	n := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if !strings.Contains(tg.Expr, "calyx_") {
				t.Errorf("panel %q: query %q is not about Calyx", p.Title, tg.Expr)
			}
			expr := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*").Replace(tg.Expr)
			n++
			b, _ := json.Marshal(expr)
			fmt.Fprintf(&rules, "  - record: dashboard:q%d\n    expr: %s\n", n, b)
		}
	}
	pt := promtool(t)
	f := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	os.WriteFile(f, []byte(rules.String()), 0o644)
	if out, err := exec.Command(pt, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("dashboard queries: %v\n%s", err, out)
	}
}
