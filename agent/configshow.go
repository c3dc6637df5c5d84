package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Usage writes calyx-agent's help: every setting with its variable and
// default.
func Usage(w io.Writer) {
	fmt.Fprintln(w, `Usage: calyx-agent [settings]                     run the agent
       calyx-agent config [settings] [-o json]   print the effective settings and their sources
       calyx-agent install-cni --help            install the CNI plugin and its conflist
       calyx-agent --version

Every setting is a flag, an environment variable and a key of the --config
YAML file; precedence flag > environment > file > default. See docs/agent.md.`)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tENVIRONMENT\tDEFAULT\tMEANING")
	for _, s := range settings() {
		fmt.Fprintf(tw, "--%s\t%s\t%s\t%s\n", s.name, s.env(), docDefault(s, "-", plain), s.help)
	}
	tw.Flush()
}

// PrintEffective writes every effective setting with its source, as a
// table or (format "json") a JSON list.
func (c *Config) PrintEffective(w io.Writer, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(c.effective)
	case "", "table", "text":
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE")
		for _, e := range c.effective {
			v := e.Value
			if v == "" {
				v = `""`
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Name, v, e.Source)
		}
		return tw.Flush()
	}
	return fmt.Errorf("-o %q: want table or json", format)
}

// SettingsMarkdown is the settings table of docs/agent.md, generated from
// the table in code.
func SettingsMarkdown() string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n")
	for _, s := range settings() {
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", s.name, s.env(), docDefault(s, "—", code), s.help)
	}
	return b.String()
}

// docDefault is the default as help shows it; quote wraps a literal one.
func docDefault(s setting, none string, quote func(string) string) string {
	switch {
	case s.defDoc != "":
		return s.defDoc
	case s.def == "":
		return none
	}
	return quote(s.def)
}

func plain(s string) string { return s }
func code(s string) string  { return "`" + s + "`" }
