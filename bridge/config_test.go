package bridge

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/evershield/bridge/contract"
)

// TestConfigDocMatchesStruct reads docs/CONFIG.md's table back against Config's tags: every variable
// appears once, with its default.
func TestConfigDocMatchesStruct(t *testing.T) {
	doc, err := os.ReadFile("../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(BRIDGE_[A-Z0-9_]+)` \\| (.*) \\| (.*) \\|$")
	inDoc := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		inDoc[m[1]] = strings.Trim(strings.TrimSpace(m[3]), "`")
	}
	typ := reflect.TypeFor[Config]()
	for f := range typ.Fields() {
		key := EnvPrefix + strings.Split(f.Tag.Get("env"), ",")[0]
		def, ok := inDoc[key]
		if !ok {
			t.Errorf("docs/CONFIG.md has no row for %s", key)
			continue
		}
		delete(inDoc, key)
		if want := f.Tag.Get("envDefault"); want != "" && def != want {
			t.Errorf("docs/CONFIG.md default of %s is %q, struct says %q", key, def, want)
		}
	}
	for k := range inDoc {
		t.Errorf("docs/CONFIG.md lists %s, which Config does not have", k)
	}
}

// TestConfigTimeoutsFollowTheModalityTable: every modality of the contract's table has its
// BRIDGE_TIMEOUT_<MODALITY>, whose default is the table's deadline, and no other modality has one.
func TestConfigTimeoutsFollowTheModalityTable(t *testing.T) {
	var cfg Config
	if got, want := len(cfg.timeouts()), len(contract.ModalitiesFor(contract.ContractAuto)); got != want {
		t.Fatalf("%d timeouts, want one per modality (%d)", got, want)
	}
	defaults := map[string]string{}
	for _, v := range Vars() {
		defaults[v.Name] = v.Default
	}
	for _, m := range contract.ModalitiesFor(contract.ContractAuto) {
		if _, ok := cfg.timeouts()[m.Name]; !ok {
			t.Errorf("modality %s has no timeout", m.Name)
		}
		def, ok := defaults[EnvPrefix+timeoutVar(m.Name)]
		if !ok {
			t.Errorf("no variable %s%s", EnvPrefix, timeoutVar(m.Name))
			continue
		}
		if kin, ok := v2Kin[m.Name]; ok && def == "" { // defaults to its v1 kin's deadline
			def = defaults[EnvPrefix+timeoutVar(kin)]
		}
		if d, err := time.ParseDuration(def); err != nil || d != m.Deadline {
			t.Errorf("%s%s defaults to %q, want %v", EnvPrefix, timeoutVar(m.Name), def, m.Deadline)
		}
	}
}

// v2Kin is the v1 modality whose deadline a v2 modality's deadline defaults to.
var v2Kin = map[string]string{"text": "prompt", "audio": "video"}
