package deploy_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	"github.com/pb33f/libopenapi/datamodel"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// asyncAPISchema is the AsyncAPI 3.0.0 JSON Schema (testdata/asyncapi/README.md says where it is from),
// and asyncAPISchemaSum its SHA-256.
const (
	asyncAPISchema    = "testdata/asyncapi/3.0.0.json"
	asyncAPISchemaSum = "1786a007ac00344a8f529e5a6fc5db786b0be6757e0b94a8b95a8a6a52b7fe9a"
)

// yamlInstance reads a YAML document as the JSON values a JSON Schema validator takes.
func yamlInstance(t *testing.T, path string) any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("%s does not convert to JSON: %v", path, err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

// metaSchema compiles the JSON Schema doc, whose $id is id, with formats asserted. No loader reaches the
// network: every reference must resolve inside doc or to a meta-schema the validator has built in.
func metaSchema(t *testing.T, id string, doc []byte) *jsonschema.Schema {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(id, v); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	s, err := c.Compile(id)
	if err != nil {
		t.Fatalf("compile %s: %v", id, err)
	}
	return s
}

// asyncAPIMeta is the compiled AsyncAPI 3.0.0 schema, after checking the file is the one the README names.
func asyncAPIMeta(t *testing.T) *jsonschema.Schema {
	t.Helper()
	b, err := os.ReadFile(asyncAPISchema)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != asyncAPISchemaSum {
		t.Fatalf("%s has SHA-256 %x, want %s (testdata/asyncapi/README.md)", asyncAPISchema, sum, asyncAPISchemaSum)
	}
	return metaSchema(t, "http://asyncapi.com/definitions/3.0.0/asyncapi.json", b)
}

// TestAsyncAPIDocumentValidates validates docs/asyncapi.yaml against the AsyncAPI 3.0.0 schema: the
// document itself, its payloads' schemaFormat and schema, and its NATS operation bindings (0.1.0). The
// schema is not vacuous: documents broken in the ways an AsyncAPI 2 habit breaks them are refused.
func TestAsyncAPIDocumentValidates(t *testing.T) {
	meta := asyncAPIMeta(t)
	if err := meta.Validate(yamlInstance(t, "../docs/asyncapi.yaml")); err != nil {
		t.Fatalf("docs/asyncapi.yaml does not validate against the AsyncAPI 3.0.0 schema: %v", err)
	}
	tests := []struct {
		name   string
		break_ func(doc map[string]any)
	}{
		{"an AsyncAPI 2 action", func(doc map[string]any) { set(doc, "publish", "operations", "publishResult", "action") }},
		{"a NATS binding field that does not exist", func(doc map[string]any) {
			set(doc, "q", "operations", "submit", "bindings", "nats", "queueGroup")
		}},
		{"a NATS binding version that does not exist", func(doc map[string]any) {
			set(doc, "9.9.9", "operations", "submit", "bindings", "nats", "bindingVersion")
		}},
		{"a schemaFormat that is not a string", func(doc map[string]any) {
			set(doc, 2020, "components", "messages", "result", "payload", "schemaFormat")
		}},
		{"a message field AsyncAPI 3 does not have", func(doc map[string]any) {
			set(doc, "Result", "components", "messages", "result", "messageId")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, _ := yamlInstance(t, "../docs/asyncapi.yaml").(map[string]any)
			tt.break_(doc)
			if err := meta.Validate(doc); err == nil {
				t.Error("validates")
			}
		})
	}
}

// set puts v at the path of keys in doc, making the maps on the way.
func set(doc map[string]any, v any, keys ...string) {
	m := doc
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

// TestOpenAPIDocumentValidates validates docs/openapi.yaml against the OpenAPI 3.1 schema (the one
// libopenapi embeds, datamodel.OpenAPI31SchemaData), every Schema Object in it against JSON Schema
// 2020-12 (which that schema leaves unchecked), and builds its model with libopenapi, which resolves every
// reference. Broken documents are refused.
func TestOpenAPIDocumentValidates(t *testing.T) {
	var head struct {
		ID string `json:"$id"`
	}
	if err := json.Unmarshal([]byte(datamodel.OpenAPI31SchemaData), &head); err != nil || !strings.HasPrefix(head.ID, "https://spec.openapis.org/oas/3.1/schema/") {
		t.Fatalf("libopenapi's OpenAPI 3.1 schema has $id %q (%v)", head.ID, err)
	}
	meta := metaSchema(t, head.ID, []byte(datamodel.OpenAPI31SchemaData))
	doc := yamlInstance(t, "../docs/openapi.yaml")
	if err := openAPIErrors(meta, doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	b, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := buildOpenAPIModel(b); err != nil {
		t.Fatalf("docs/openapi.yaml: libopenapi: %v", err)
	}

	tests := []struct {
		name   string
		break_ func(doc map[string]any)
	}{
		{"a security scheme of an unknown type", func(doc map[string]any) {
			set(doc, "token", "components", "securitySchemes", "webhookToken", "type")
		}},
		{"an apiKey without its parameter's name", func(doc map[string]any) {
			delete(dig(doc, "components", "securitySchemes", "webhookToken").(map[string]any), "name")
		}},
		{"a response without a description", func(doc map[string]any) {
			delete(dig(doc, "components", "responses", "stored").(map[string]any), "description")
		}},
		{"a schema that is not JSON Schema", func(doc map[string]any) {
			set(doc, "integer-ish", "components", "schemas", "Error", "properties", "message", "type")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, _ := yamlInstance(t, "../docs/openapi.yaml").(map[string]any)
			tt.break_(doc)
			if err := openAPIErrors(meta, doc); err == nil {
				t.Error("validates")
			}
		})
	}
	// A reference to nothing passes the schema (a $ref is only a URI to it); libopenapi refuses it.
	broken := bytes.Replace(b, []byte(`"#/components/responses/stored"`), []byte(`"#/components/responses/kept"`), 1)
	if bytes.Equal(broken, b) || buildOpenAPIModel(broken) == nil {
		t.Error("libopenapi builds a model whose reference #/components/responses/kept resolves to nothing")
	}
}

// openAPIErrors validates an OpenAPI document against meta, then compiles each of its Schema Objects,
// which the compiler checks against JSON Schema 2020-12, the dialect of OpenAPI 3.1.
func openAPIErrors(meta *jsonschema.Schema, doc any) error {
	if err := meta.Validate(doc); err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("file:///openapi.json", doc); err != nil {
		return err
	}
	for _, ptr := range schemaObjects(doc, "") {
		if _, err := c.Compile("file:///openapi.json#" + ptr); err != nil {
			return fmt.Errorf("schema %s: %w", ptr, err)
		}
	}
	return nil
}

// schemaObjects are the JSON pointers of the Schema Objects in an OpenAPI document: the values of
// components.schemas and of every "schema" of a parameter, header or media type (not searched further:
// inside a schema, "schema" may be a property's name).
func schemaObjects(v any, ptr string) []string {
	m, ok := v.(map[string]any)
	if !ok {
		if a, ok := v.([]any); ok {
			var out []string
			for i, e := range a {
				out = append(out, schemaObjects(e, fmt.Sprintf("%s/%d", ptr, i))...)
			}
			return out
		}
		return nil
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		p := ptr + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
		switch {
		case k == "schema" || ptr == "/components/schemas":
			out = append(out, p)
		default:
			out = append(out, schemaObjects(m[k], p)...)
		}
	}
	return out
}

// buildOpenAPIModel parses an OpenAPI document with libopenapi and builds its 3.1 model, resolving every
// reference; it returns what went wrong.
func buildOpenAPIModel(b []byte) error {
	// References resolve inside the document only (libopenapi's default), and what it logs is dropped:
	// the error it returns says the same.
	doc, err := libopenapi.NewDocumentWithConfiguration(b, &datamodel.DocumentConfiguration{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if _, err := doc.BuildV3Model(); err != nil {
		return err
	}
	return nil
}

// dig walks a decoded document by keys.
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
