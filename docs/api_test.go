package docs_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/ingest"
	"github.com/evershield/bridge/internal/ingesttest"
	"github.com/evershield/bridge/internal/testworld"
)

// loadYAML parses a YAML document and re-encodes it as JSON values, as a JSON Schema validator takes them.
func loadYAML(t *testing.T, path string) (map[string]any, any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s is not valid YAML: %v", path, err)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("%s does not convert to JSON: %v", path, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return doc, inst
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestOpenAPIAnswersOfTheRealHandler sends requests to the real ingest handler (publishing to an embedded
// JetStream) and checks that each status is documented for its path and method in openapi.yaml, and that
// each body matches the documented schema.
func TestOpenAPIAnswersOfTheRealHandler(t *testing.T) {
	doc, inst := loadYAML(t, "openapi.yaml")
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.1.") {
		t.Fatalf("openapi = %q, want 3.1.x", v)
	}
	paths, _ := doc["paths"].(map[string]any)
	for _, p := range []string{ingest.PathWebhook, ingest.PathWebhook + "/{modality}", ingest.PathHealthz,
		ingest.PathReadyz, ingest.PathMetrics} {
		if _, ok := paths[p]; !ok {
			t.Errorf("openapi.yaml has no path %s", p)
		}
	}

	// The token is the security scheme's query parameter: requests below carry it under the name the
	// document gives, and the webhook operations require that scheme (or nothing, when no token is set).
	tokenParam := webhookTokenParam(t, doc)
	for _, p := range []string{ingest.PathWebhook, ingest.PathWebhook + "/{modality}"} {
		if !slices.ContainsFunc(securityOf(dig(paths[p], "post", "security")), func(names []string) bool {
			return slices.Equal(names, []string{"webhookToken"})
		}) {
			t.Errorf("openapi.yaml: POST %s does not require the security scheme webhookToken", p)
		}
	}

	// OpenAPI 3.1 schemas are JSON Schema 2020-12: compile them out of the document itself.
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("file:///openapi.json", inst); err != nil {
		t.Fatal(err)
	}
	schemaOf := func(ptr string) *jsonschema.Schema {
		t.Helper()
		s, err := c.Compile("file:///openapi.json#" + ptr)
		if err != nil {
			t.Fatalf("compile openapi.yaml %s: %v", ptr, err)
		}
		return s
	}
	errSchema := schemaOf("/components/schemas/Error")
	stored := schemaOf("/components/responses/stored/content/application~1json/schema")

	js := testworld.New(t).JS
	ctx := t.Context()
	h, err := ingest.New(ingest.Config{Publisher: js, Token: "t0k", MaxBody: 1024})
	if err != nil {
		t.Fatal(err)
	}
	base := ingesttest.Serve(t, ingest.ServerConfig{Handler: h, MaxBody: 1024})
	const id = "7b0c3f5e-8d2a-4c1b-9e4f-2a6d8c0b1e3f"
	tests := []struct {
		name, method, target, ctype, body string
		path                              string // the openapi.yaml path
		status                            int
		code                              string // the error field; empty for a success
	}{
		{"stored", "POST", "/webhook/prompt?token=t0k", "application/json", `{"job_id":"` + id + `"}`, "/webhook/{modality}", 200, ""},
		{"duplicate", "POST", "/webhook/prompt?token=t0k", "", `{"job_id":"` + id + `"}`, "/webhook/{modality}", 200, ""},
		{"unknown path modality", "POST", "/webhook?token=t0k", "", `{"job_id":"` + id + `"}`, "/webhook", 200, ""},
		{"malformed", "POST", "/webhook?token=t0k", "", `nope`, "/webhook", 400, "malformed_json"},
		{"not object", "POST", "/webhook?token=t0k", "", `[]`, "/webhook", 400, "not_object"},
		{"bad job_id", "POST", "/webhook?token=t0k", "", `{"job_id":"42"}`, "/webhook", 400, "invalid_job_id"},
		{"no token", "POST", "/webhook/prompt", "", `{"job_id":"` + id + `"}`, "/webhook/{modality}", 401, "unauthorized"},
		{"unknown modality", "POST", "/webhook/fax?token=t0k", "", `{}`, "/webhook/{modality}", 404, "unknown_modality"},
		{"wrong method", "GET", "/webhook/prompt?token=t0k", "", ``, "/webhook/{modality}", 405, "method_not_allowed"},
		{"too large", "POST", "/webhook?token=t0k", "", `{"job_id":"` + id + `","x":"` + strings.Repeat("a", 2000) + `"}`, "/webhook", 413, "body_too_large"},
		{"media type", "POST", "/webhook?token=t0k", "text/plain", `{}`, "/webhook", 415, "unsupported_media_type"},
		{"healthz", "GET", "/healthz", "", ``, "/healthz", 200, ""},
		{"readyz", "GET", "/readyz", "", ``, "/readyz", 200, ""},
		{"healthz post", "POST", "/healthz", "", ``, "/healthz", 405, "method_not_allowed"},
		{"headers too large", "POST", "/webhook?token=t0k", "application/json;x=" + strings.Repeat("a", 20<<10), `{}`, "/webhook", 431, "headers_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := strings.Replace(tt.target, "?token=", "?"+tokenParam+"=", 1)
			req, _ := http.NewRequestWithContext(ctx, tt.method, base+target, strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			rec, err := answer(req)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			// A 405 answers a method the path has no operation for: some operation of the path documents it.
			methods := []string{strings.ToLower(tt.method)}
			if rec.Code == http.StatusMethodNotAllowed {
				methods = []string{"get", "post"}
			}
			documented := false
			for _, m := range methods {
				documented = documented || dig(paths[tt.path], m, "responses", strconv.Itoa(rec.Code)) != nil
			}
			if !documented {
				t.Errorf("openapi.yaml does not document %d for %s %s", rec.Code, tt.method, tt.path)
			}
			body, err := jsonschema.UnmarshalJSON(bytes.NewReader(rec.Body))
			if err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, rec.Body)
			}
			switch {
			case tt.code != "":
				if err := errSchema.Validate(body); err != nil {
					t.Errorf("error body does not match openapi.yaml Error: %v\n%s", err, rec.Body)
				}
				if got := body.(map[string]any)["error"]; got != tt.code {
					t.Errorf("error = %v, want %s", got, tt.code)
				}
			case strings.HasPrefix(tt.path, ingest.PathWebhook):
				if err := stored.Validate(body); err != nil {
					t.Errorf("answer does not match openapi.yaml stored: %v\n%s", err, rec.Body)
				}
			}
		})
	}
}

// webhookTokenParam is the query parameter of the security scheme webhookToken, which must be an apiKey
// in the query.
func webhookTokenParam(t *testing.T, doc map[string]any) string {
	t.Helper()
	scheme := dig(doc, "components", "securitySchemes", "webhookToken")
	name, _ := dig(scheme, "name").(string)
	if dig(scheme, "type") != "apiKey" || dig(scheme, "in") != "query" || name == "" {
		t.Fatalf("openapi.yaml: components.securitySchemes.webhookToken = %v, want an apiKey in the query", scheme)
	}
	return name
}

// securityOf lists the scheme names of each security requirement of an operation's security.
func securityOf(v any) [][]string {
	reqs, _ := v.([]any)
	var out [][]string
	for _, r := range reqs {
		m, _ := r.(map[string]any)
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		slices.Sort(names)
		out = append(out, names)
	}
	return out
}

// recorded is an answer read whole.
type recorded struct {
	Code int
	Body []byte
}

// answer sends req on a fresh connection and reads the whole answer.
func answer(req *http.Request) (recorded, error) {
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return recorded{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return recorded{resp.StatusCode, b}, err
}

// TestAsyncAPINamesTheContract parses asyncapi.yaml and requires a channel for every subject family of
// contract/names.go, every header the bridge sets, and schema references that exist.
func TestAsyncAPINamesTheContract(t *testing.T) {
	doc, _ := loadYAML(t, "asyncapi.yaml")
	if v, _ := doc["asyncapi"].(string); v != "3.0.0" {
		t.Fatalf("asyncapi = %q, want 3.0.0", v)
	}
	var addresses []string
	for _, ch := range doc["channels"].(map[string]any) {
		if a, ok := dig(ch, "address").(string); ok {
			addresses = append(addresses, a)
		}
	}
	for _, want := range []string{
		contract.Default.SubjectSubmit + "{modality}", contract.Default.SubjectJobStatus, contract.Default.SubjectResults + "{type}",
		contract.Default.SubjectLateResults + "{type}", contract.Default.SubjectWebhooks + "{modality}", contract.Default.SubjectDeadLetter + "{reason}",
		contract.Default.SubjectUnknownLane,
	} {
		if !slices.Contains(addresses, want) {
			t.Errorf("asyncapi.yaml has no channel with address %s (has %v)", want, addresses)
		}
	}
	raw, err := os.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range append(bridgeHeaders(), "Nats-Msg-Id", micro.ErrorHeader, micro.ErrorCodeHeader, "Retry-After") {
		if !bytes.Contains(raw, []byte(h+":")) {
			t.Errorf("asyncapi.yaml does not describe header %s", h)
		}
	}
	for _, m := range regexp.MustCompile(`\$ref: "(\./[^"#]+)"`).FindAllSubmatch(raw, -1) {
		if _, err := os.Stat(string(m[1])); err != nil {
			t.Errorf("asyncapi.yaml refers to %s: %v", m[1], err)
		}
	}

	// A payload that refers to a schema file names its format: the files are JSON Schema 2020-12, and
	// without schemaFormat a reader takes them for AsyncAPI schemas (a draft-07 superset).
	for name, msg := range dig(doc, "components", "messages").(map[string]any) {
		ref, _ := dig(msg, "payload", "schema", "$ref").(string)
		if ref == "" {
			if r, _ := dig(msg, "payload", "$ref").(string); strings.HasPrefix(r, "./") {
				t.Errorf("asyncapi.yaml message %s: payload refers to %s without a schemaFormat", name, r)
			}
			continue
		}
		var file struct {
			Schema string `json:"$schema"`
		}
		readJSON(t, ref, &file)
		const format = "application/schema+json;version=draft-2020-12"
		if got := dig(msg, "payload", "schemaFormat"); got != format || file.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("asyncapi.yaml message %s: schemaFormat %v for %s (whose $schema is %s), want %s", name, got, ref, file.Schema, format)
		}
	}
	// The submit service's endpoints are in the micro service's queue group: one process answers a request.
	for _, op := range []string{"submit", "jobStatus"} {
		if got := dig(doc, "operations", op, "bindings", "nats", "queue"); got != micro.DefaultQueueGroup {
			t.Errorf("asyncapi.yaml operation %s: NATS binding queue %v, want %q (the micro service's)", op, got, micro.DefaultQueueGroup)
		}
	}
}

// bridgeHeaders are the Header* constants of contract/names.go.
func bridgeHeaders() []string {
	return []string{
		contract.HeaderBridgeSource, contract.HeaderReceivedAt, contract.HeaderRemoteAddr, contract.HeaderModality, contract.HeaderReason,
		contract.HeaderAttempts, contract.HeaderIdempotencyKey, contract.HeaderOriginalSubject, contract.HeaderOriginalSeq,
		contract.HeaderOriginalMsgID, contract.HeaderReplay, contract.HeaderTraceParent, contract.HeaderTraceState,
	}
}

// TestDesignNamesTheContract requires docs/DESIGN.md to name every stream, consumer, bucket, service,
// subject prefix and header of contract/names.go, every dead-letter reason and every micro error code.
func TestDesignNamesTheContract(t *testing.T) {
	b, err := os.ReadFile("DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	names := append(bridgeHeaders(),
		contract.Default.StreamWebhooks, contract.Default.StreamResults, contract.Default.StreamDeadLetter, contract.Default.StreamSlowLane,
		contract.Default.BucketJobs, contract.Default.BucketLeases, contract.Default.BucketIdempotency, contract.Default.BucketReplay, "BRIDGE_BUDGET",
		contract.Default.ConsumerVerify, contract.Default.ConsumerVerifyUnknown, contract.Default.ServiceName, contract.Default.SubjectJobStatus,
		contract.Default.SubjectWebhooks+"<modality>", contract.Default.SubjectWebhooks+contract.ModalityUnknown, contract.Default.SubjectResults+"<type>",
		contract.Default.SubjectLateResults+"<type>", contract.Default.SubjectDeadLetter+"<reason>", contract.Default.SubjectSubmit+"<modality>",
		contract.Default.SubjectReplayPrefix, contract.Default.SubjectUnknownLane, "<job_id>"+contract.LateSuffix,
		contract.SourceWebhook, contract.SourcePoll, contract.SourceTimeout, "Nats-Msg-Id", micro.ErrorHeader, micro.ErrorCodeHeader,
		"not_found", "attempts_exhausted", "malformed", "upstream_<status>", "unknown_job",
		"INVALID_REQUEST", "JOB_NOT_FOUND", "BUSY", "Retry-After",
		"ingest/", "verify/", "submit/", "reconcile/", "upstream/", "contract/", "natsx/", "jobs/", "bridge/", "cmd/bridge",
	)
	for _, m := range contract.Modalities() {
		names = append(names, contract.Default.SubjectSubmit+m.Name)
	}
	for _, r := range contract.Default.Owned() { // every resource the bridge owns, and each stream's subjects
		names = append(names, r.Name)
		names = append(names, r.Subjects...)
	}
	for _, n := range names {
		if !bytes.Contains(b, []byte("`"+n+"`")) {
			t.Errorf("DESIGN.md does not name `%s`", n)
		}
	}
}

// TestNoLinkLeavesTheRepo follows every relative Markdown link of README.md and docs/*.md: each must name
// a file inside the repository, and a #fragment a heading of the Markdown file it names, so that a fresh
// clone has no dead link.
func TestNoLinkLeavesTheRepo(t *testing.T) {
	root := repoRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append(files, filepath.Join(root, "README.md"))
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range link.FindAllSubmatch(b, -1) {
			target := string(m[1])
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, fragment, _ := strings.Cut(target, "#")
			abs := f
			if target != "" {
				abs = filepath.Join(filepath.Dir(f), target)
			}
			if rel, err := filepath.Rel(root, abs); err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s links %s, outside the repository", filepath.Base(f), m[1])
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				t.Errorf("%s links %s, which does not exist", filepath.Base(f), m[1])
			} else if fragment != "" && strings.HasSuffix(abs, ".md") && !slices.Contains(headingAnchors(t, abs), fragment) {
				t.Errorf("%s links %s, which names no heading of %s", filepath.Base(f), m[1], filepath.Base(abs))
			}
		}
	}
	if len(files) < 2 {
		t.Fatalf("found only %v", files)
	}
}

// headingAnchors are the anchors a forge gives the headings of a Markdown file: lower case, spaces as
// hyphens, other punctuation dropped.
func headingAnchors(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var anchors []string
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(b), -1) {
		var a strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(m[1])) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				a.WriteRune(r)
			case r == ' ':
				a.WriteRune('-')
			}
		}
		anchors = append(anchors, a.String())
	}
	return anchors
}
