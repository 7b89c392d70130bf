package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/evershield/bridge/contract"
	"github.com/evershield/bridge/internal/natstest"
)

func TestValidWebhookStoredUnchanged(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	now := time.Date(2025, 6, 1, 12, 30, 45, 123456789, time.FixedZone("CEST", 2*3600))
	hs := newHarness(t, n.ClientURL(), Config{Now: func() time.Time { return now }})
	createWebhooks(t, hs.js, 1)

	tests := []struct {
		name        string
		path        string
		contentType string
		body        func(id string) string
		wantSubject string
		wantMod     string
	}{
		{"prompt", "/webhook/prompt", "", webhookBody, "webhooks.prompt", "prompt"},
		{"no modality", "/webhook", "", webhookBody, "webhooks.unknown", ""},
		{"image", "/webhook/image", "", webhookBody, "webhooks.image", "image"},
		{"video", "/webhook/video", "", webhookBody, "webhooks.video", "video"},
		{"chat", "/webhook/chat", "", webhookBody, "webhooks.chat", "chat"},
		{"newer text", "/webhook/text", "", webhookBody, "webhooks.text", "text"},
		{"newer audio", "/webhook/audio", "", webhookBody, "webhooks.audio", "audio"},
		{"charset param", "/webhook/prompt", "application/json; charset=utf-8", webhookBody, "webhooks.prompt", "prompt"},
		{"+json type", "/webhook/prompt", "application/cloudevents+json", webhookBody, "webhooks.prompt", "prompt"},
		{"no content type", "/webhook/prompt", "-", webhookBody, "webhooks.prompt", "prompt"},
		{"odd layout and nesting kept", "/webhook/video", "", func(id string) string {
			return " \n{ \"categories\" : {\"job_id\": 1, \"x\": [\"}\", \"\\\"\"]},\n \"job_id\"\t: \"" + id +
				"\", \"frames\": [1, 2.5e3, null, true], \"delivery_id\": \"abc\\u00e9\" } \n"
		}, "webhooks.video", "video"},
		// The body is stored as sent; the job id, in the answer and Nats-Msg-Id, is the canonical lower
		// case (issue 12 finding 5).
		{"upper-case UUID: body kept, id canonical", "/webhook/chat", "", func(string) string {
			return `{"job_id":"` + strings.ToUpper(uuid.NewString()) + `"}`
		}, "webhooks.chat", "chat"},
	}
	before := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := uuid.NewString()
			body := tt.body(id)
			if strings.HasPrefix(tt.name, "upper-case UUID") {
				var v struct {
					JobID string `json:"job_id"`
				}
				_ = json.Unmarshal([]byte(body), &v)
				id = strings.ToLower(v.JobID)
			}
			resp := hs.do(t, request{Path: tt.path, ContentType: tt.contentType, Body: body})
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d, want 200: %s", resp.Status, resp.Body)
			}
			var got struct {
				JobID     string `json:"job_id"`
				Duplicate bool   `json:"duplicate"`
			}
			if err := json.Unmarshal(resp.Body, &got); err != nil || got.JobID != id || got.Duplicate {
				t.Fatalf("answer %s (%v), want job_id %s, duplicate false", resp.Body, err, id)
			}
			// A plain answer a sender can frame: JSON, with its length (no chunking).
			if ct, cl := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"); ct != "application/json" || cl != fmt.Sprint(len(resp.Body)) {
				t.Errorf("answer Content-Type %q Content-Length %q, want application/json and %d", ct, cl, len(resp.Body))
			}
			msgs := stored(t, hs.js)
			if len(msgs) != before+1 {
				t.Fatalf("stream has %d messages, want %d", len(msgs), before+1)
			}
			before++
			m := msgs[len(msgs)-1]
			if m.Subject != tt.wantSubject {
				t.Errorf("subject %q, want %q", m.Subject, tt.wantSubject)
			}
			if string(m.Data) != body {
				t.Errorf("body changed:\n got %q\nwant %q", m.Data, body)
			}
			if got := m.Header.Get(jetstream.MsgIDHeader); got != id {
				t.Errorf("%s %q, want %q", jetstream.MsgIDHeader, got, id)
			}
			if got, want := m.Header.Get(contract.HeaderReceivedAt), now.UTC().Format(time.RFC3339Nano); got != want {
				t.Errorf("%s %q, want %q", contract.HeaderReceivedAt, got, want)
			}
			if got := m.Header.Get(contract.HeaderRemoteAddr); !strings.HasPrefix(got, "127.0.0.1:") {
				t.Errorf("%s %q, want 127.0.0.1:<port>", contract.HeaderRemoteAddr, got)
			}
			if got, ok := m.Header[contract.HeaderModality]; tt.wantMod == "" && ok || tt.wantMod != "" && (len(got) != 1 || got[0] != tt.wantMod) {
				t.Errorf("%s %q, want %q", contract.HeaderModality, got, tt.wantMod)
			}
		})
	}
	if got := outcomes(hs.h, outcomeAccepted); got != float64(len(tests)) {
		t.Errorf("accepted counter %v, want %d", got, len(tests))
	}
}

// TestDuplicateWebhookPublishesOnce sends 10 concurrent copies: ten 200s, one stored message. On an R3
// cluster the concurrent copies meet the server's "duplicate message id is in process" answer, which must
// still end in a 200 duplicate, not a 503.
func TestDuplicateWebhookPublishesOnce(t *testing.T) {
	t.Parallel()
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		n := natstest.RunServer(t)
		testDuplicateWebhookPublishesOnce(t, n.ClientURL(), 1)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		c := natstest.RunCluster(t, 3)
		testDuplicateWebhookPublishesOnce(t, c.URLs(), 3)
	})
}

func testDuplicateWebhookPublishesOnce(t *testing.T, urls string, replicas int) {
	hs := newHarness(t, urls, Config{})
	createWebhooks(t, hs.js, replicas)

	id := uuid.NewString()
	body := webhookBody(id)
	const copies = 10
	type result struct {
		resp response
		err  error
	}
	results := make(chan result, copies)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range copies {
		wg.Go(func() {
			<-start
			resp, err := hs.try(natstest.Ctx(t), request{Path: "/webhook/image", Body: body})
			results <- result{resp, err}
		})
	}
	close(start)
	wg.Wait()
	close(results)
	dups := 0
	for r := range results {
		if r.err != nil || r.resp.Status != http.StatusOK {
			t.Fatalf("copy answered %d %s (%v), want 200", r.resp.Status, r.resp.Body, r.err)
		}
		var got struct {
			JobID     string `json:"job_id"`
			Duplicate bool   `json:"duplicate"`
		}
		if err := json.Unmarshal(r.resp.Body, &got); err != nil || got.JobID != id {
			t.Fatalf("answer %s (%v)", r.resp.Body, err)
		}
		if got.Duplicate {
			dups++
		}
	}
	if dups != copies-1 {
		t.Errorf("%d answers say duplicate, want %d", dups, copies-1)
	}
	msgs := stored(t, hs.js)
	if len(msgs) != 1 || string(msgs[0].Data) != body {
		t.Fatalf("stream has %d messages, want exactly one with the body", len(msgs))
	}
	if a, d := outcomes(hs.h, outcomeAccepted), outcomes(hs.h, outcomeDuplicate); a != 1 || d != copies-1 {
		t.Errorf("counters accepted=%v duplicate=%v, want 1 and %d", a, d, copies-1)
	}
}

// badInput is one class of junk and how it must be answered.
type badInput struct {
	name       string
	req        request
	wantStatus int
	wantErr    error
	wantAllow  string
}

const (
	testToken   = "s3cret-token"
	testMaxBody = 1024
)

// badInputs is every class of junk, sent to a handler with Token testToken and MaxBody testMaxBody.
func badInputs() []badInput {
	id := uuid.NewString()
	ok := "/webhook/prompt?token=" + testToken
	body := func(s string) request { return request{Path: ok, Body: s} }
	big := `{"job_id":"` + id + `","pad":"` + strings.Repeat("x", testMaxBody) + `"}`
	return []badInput{
		{"empty body", body(""), 400, ErrMalformed, ""},
		{"whitespace body", body(" \n "), 400, ErrMalformed, ""},
		{"not json", body("job_id=" + id), 400, ErrMalformed, ""},
		{"truncated", body(`{"job_id":"` + id + `"`), 400, ErrMalformed, ""},
		{"trailing garbage", body(`{"job_id":"` + id + `"} x`), 400, ErrMalformed, ""},
		{"two objects", body(`{"job_id":"` + id + `"}{}`), 400, ErrMalformed, ""},
		{"single quotes", body(`{'job_id':'` + id + `'}`), 400, ErrMalformed, ""},
		{"bad escape", body(`{"job_id":"\x"}`), 400, ErrMalformed, ""},
		{"array", body(`[{"job_id":"` + id + `"}]`), 400, ErrNotObject, ""},
		{"string", body(`"` + id + `"`), 400, ErrNotObject, ""},
		{"null", body(`null`), 400, ErrNotObject, ""},
		{"number", body(`42`), 400, ErrNotObject, ""},
		{"no job_id", body(`{"status":"completed"}`), 400, ErrJobID, ""},
		{"empty object", body(`{}`), 400, ErrJobID, ""},
		{"job_id only nested", body(`{"data":{"job_id":"` + id + `"}}`), 400, ErrJobID, ""},
		{"job_id other case", body(`{"JOB_ID":"` + id + `"}`), 400, ErrJobID, ""},
		{"job_id number", body(`{"job_id":12345}`), 400, ErrJobID, ""},
		{"job_id null", body(`{"job_id":null}`), 400, ErrJobID, ""},
		{"job_id object", body(`{"job_id":{"id":"` + id + `"}}`), 400, ErrJobID, ""},
		{"job_id empty", body(`{"job_id":""}`), 400, ErrJobID, ""},
		{"job_id not uuid", body(`{"job_id":"job-123"}`), 400, ErrJobID, ""},
		{"job_id braces", body(`{"job_id":"{` + id + `}"}`), 400, ErrJobID, ""},
		{"job_id urn", body(`{"job_id":"urn:uuid:` + id + `"}`), 400, ErrJobID, ""},
		{"job_id no hyphens", body(`{"job_id":"` + strings.ReplaceAll(id, "-", "") + `"}`), 400, ErrJobID, ""},
		{"job_id padded", body(`{"job_id":" ` + id + `"}`), 400, ErrJobID, ""},
		{"job_id twice", body(`{"job_id":"` + id + `","job_id":"` + uuid.NewString() + `"}`), 400, ErrJobID, ""},
		{"too large by length", body(big), 413, ErrTooLarge, ""},
		{"too large chunked", request{Path: ok, Body: big, Chunked: true}, 413, ErrTooLarge, ""},
		{"text/plain", request{Path: ok, Body: webhookBody(id), ContentType: "text/plain"}, 415, ErrMediaType, ""},
		{"form", request{Path: ok, Body: "job_id=" + id, ContentType: "application/x-www-form-urlencoded"}, 415, ErrMediaType, ""},
		{"json-seq", request{Path: ok, Body: webhookBody(id), ContentType: "application/json-seq"}, 415, ErrMediaType, ""},
		{"bad media type", request{Path: ok, Body: webhookBody(id), ContentType: "application/json;;="}, 415, ErrMediaType, ""},
		{"GET webhook", request{Method: "GET", Path: "/webhook?token=" + testToken}, 405, ErrMethod, "POST"},
		{"PUT webhook modality", request{Method: "PUT", Path: ok, Body: webhookBody(id)}, 405, ErrMethod, "POST"},
		{"POST healthz", request{Path: "/healthz", Body: "{}"}, 405, ErrMethod, "GET, HEAD"},
		{"unknown modality", request{Path: "/webhook/sound?token=" + testToken, Body: webhookBody(id)}, 404, ErrUnknownModality, ""},
		{"reserved modality", request{Path: "/webhook/unknown?token=" + testToken, Body: webhookBody(id)}, 404, ErrUnknownModality, ""},
		{"empty modality", request{Path: "/webhook/?token=" + testToken, Body: webhookBody(id)}, 404, ErrUnknownModality, ""},
		{"modality with subpath", request{Path: "/webhook/prompt/x?token=" + testToken, Body: webhookBody(id)}, 404, ErrUnknownModality, ""},
		{"modality case", request{Path: "/webhook/Prompt?token=" + testToken, Body: webhookBody(id)}, 404, ErrUnknownModality, ""},
		{"other path", request{Path: "/hooks", Body: webhookBody(id)}, 404, ErrNotFound, ""},
		{"no token", request{Path: "/webhook/prompt", Body: webhookBody(id)}, 401, ErrUnauthorized, ""},
		{"wrong token", request{Path: "/webhook/prompt?token=s3cret-tokeN", Body: webhookBody(id)}, 401, ErrUnauthorized, ""},
		{"token prefix", request{Path: "/webhook/prompt?token=s3cret", Body: webhookBody(id)}, 401, ErrUnauthorized, ""},
		{"token in header only", request{Path: "/webhook", Body: webhookBody(id)}, 401, ErrUnauthorized, ""},
	}
}

// wantErrorCodes are the error codes of the answer body, written out here rather than read from the
// handler's own table (errorStatus), so that a change of that table fails this test.
var wantErrorCodes = map[error]string{
	ErrMalformed:       "malformed_json",
	ErrNotObject:       "not_object",
	ErrJobID:           "invalid_job_id",
	ErrTooLarge:        "body_too_large",
	ErrMediaType:       "unsupported_media_type",
	ErrMethod:          "method_not_allowed",
	ErrUnknownModality: "unknown_modality",
	ErrNotFound:        "not_found",
	ErrUnauthorized:    "unauthorized",
	ErrSignature:       "invalid_signature",
}

func TestJunkRejectedAndNothingPublished(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	hs := newHarness(t, n.ClientURL(), Config{Token: testToken, MaxBody: testMaxBody})
	createWebhooks(t, hs.js, 1)

	for _, tt := range badInputs() {
		t.Run(tt.name, func(t *testing.T) {
			resp := hs.do(t, tt.req)
			if resp.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.Status, tt.wantStatus, resp.Body)
			}
			wantCode, ok := wantErrorCodes[tt.wantErr]
			if !ok {
				t.Fatalf("no expected code for %v", tt.wantErr)
			}
			var got errorBody
			if err := json.Unmarshal(resp.Body, &got); err != nil || got.Error != wantCode || got.Message == "" {
				t.Fatalf("body %s (%v), want error %q and a message", resp.Body, err, wantCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if strings.Contains(string(resp.Body), testToken) {
				t.Errorf("answer echoes the token: %s", resp.Body)
			}
			if got := resp.Header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
		})
	}
	if msgs := stored(t, hs.js); len(msgs) != 0 {
		t.Fatalf("junk published %d messages", len(msgs))
	}
	// body_too_large is answered before the body is read when declared, and counted.
	for _, code := range []string{"invalid_job_id", "body_too_large"} {
		if got := outcomes(hs.h, code); got == 0 {
			t.Errorf("%s not counted", code)
		}
	}
	// The same handler still accepts a good webhook.
	if resp := hs.post(t, "/webhook/prompt?token="+testToken, webhookBody(uuid.NewString())); resp.Status != 200 {
		t.Fatalf("valid webhook after junk: %d %s", resp.Status, resp.Body)
	}
}

func TestJobID(t *testing.T) {
	id := uuid.NewString()
	tests := []struct {
		name    string
		body    string
		want    string
		wantErr error
	}{
		{"plain", `{"job_id":"` + id + `"}`, id, nil},
		{"escaped key", `{"job\u005fid":"` + id + `"}`, id, nil},
		{"escaped value", `{"job_id":"\u0030` + id[1:] + `"}`, "0" + id[1:], nil},
		{"last of many keys", `{"a":[{"job_id":1}],"b":"}\"{","job_id":"` + id + `"}`, id, nil},
		{"whitespace", "\t{\r\n\"job_id\" :\n\"" + id + "\" }\n", id, nil},
		{"escaped duplicate", `{"job_id":"` + id + `","job\u005fid":"` + id + `"}`, "", ErrJobID},
		{"key with escaped quote", `{"job_id\"":"` + id + `"}`, "", ErrJobID},
		{"bool", `{"job_id":true}`, "", ErrJobID},
		{"array top", `[]`, "", ErrNotObject},
		{"invalid utf8 ok elsewhere", "{\"x\":\"\xff\",\"job_id\":\"" + id + "\"}", id, nil},
		// Issue 12 finding 5: upper- and lower-case ids are one job, keyed in lower case.
		{"upper case is canonicalised", `{"job_id":"7B0C1D2E-0000-4000-8000-00000000000A"}`, "7b0c1d2e-0000-4000-8000-00000000000a", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := jobID([]byte(tt.body))
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Fatalf("jobID = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// FuzzWebhook sends arbitrary bodies to the real handler on a real server: it must not panic, and must either
// reject with a 4xx or store the webhook under a job_id that an independent JSON decoder agrees is a UUID.
func FuzzWebhook(f *testing.F) {
	for _, tt := range badInputs() {
		f.Add(tt.req.Body)
	}
	id := uuid.NewString()
	f.Add(webhookBody(id))
	f.Add(`{"job_id":"` + id + `"}`)
	f.Add(`{"job\u005fid":"` + id + `","x":{"job_id":[1,{"y":"\"}"}]}}`)

	n := natstest.RunServer(f)
	hs := newHarness(f, n.ClientURL(), Config{MaxBody: testMaxBody})
	createWebhooks(f, hs.js, 1)
	s, err := hs.js.Stream(natstest.Ctx(f), contract.Default.StreamWebhooks)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, body string) {
		info, err := s.Info(natstest.Ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		resp := hs.do(t, request{Path: "/webhook/chat", Body: body})
		switch {
		case resp.Status == http.StatusOK:
			var v map[string]any
			if err := json.Unmarshal([]byte(body), &v); err != nil {
				t.Fatalf("accepted a body encoding/json rejects: %v", err)
			}
			want, ok := v["job_id"].(string)
			if !ok || len(want) != 36 || uuid.Validate(want) != nil {
				t.Fatalf("accepted job_id %#v", v["job_id"])
			}
			var got struct {
				JobID string `json:"job_id"`
			}
			if err := json.Unmarshal(resp.Body, &got); err != nil || got.JobID != strings.ToLower(want) {
				t.Fatalf("answer %s, decoder says job_id %q", resp.Body, want)
			}
		case resp.Status >= 400 && resp.Status < 500:
			after, err := s.Info(natstest.Ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if after.State.LastSeq != info.State.LastSeq {
				t.Fatalf("rejected (%d) but published", resp.Status)
			}
		default:
			t.Fatalf("status %d: %s", resp.Status, resp.Body)
		}
	})
}

func TestUnavailableAnswers503(t *testing.T) {
	t.Parallel()
	t.Run("NATS down then back", func(t *testing.T) {
		t.Parallel()
		n := natstest.RunServer(t)
		hs := newHarness(t, n.ClientURL(), Config{})
		createWebhooks(t, hs.js, 1)
		if resp := hs.post(t, "/webhook/prompt", webhookBody(uuid.NewString())); resp.Status != 200 {
			t.Fatalf("before stop: %d %s", resp.Status, resp.Body)
		}

		n.Stop()
		natstest.WaitFor(t, 10*time.Second, func() error {
			if hs.nc.IsConnected() {
				return errors.New("client still connected")
			}
			return nil
		})
		down := uuid.NewString()
		resp := hs.post(t, "/webhook/prompt", webhookBody(down))
		if resp.Status != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("while down: %d Retry-After=%q %s, want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"), resp.Body)
		}
		var eb errorBody
		if err := json.Unmarshal(resp.Body, &eb); err != nil || eb.Error != "unavailable" {
			t.Fatalf("body %s", resp.Body)
		}
		if r := hs.do(t, request{Method: "GET", Path: "/readyz"}); r.Status != http.StatusServiceUnavailable {
			t.Errorf("readyz while down: %d", r.Status)
		}

		n.Restart(t)
		natstest.WaitFor(t, 10*time.Second, func() error {
			if !hs.nc.IsConnected() {
				return errors.New("client not reconnected")
			}
			return nil
		})
		if r := hs.do(t, request{Method: "GET", Path: "/readyz"}); r.Status != http.StatusOK {
			t.Errorf("readyz after restart: %d", r.Status)
		}
		after := uuid.NewString()
		if resp := hs.post(t, "/webhook/prompt", webhookBody(after)); resp.Status != 200 {
			t.Fatalf("after restart: %d %s", resp.Status, resp.Body)
		}
		var ids []string
		for _, m := range stored(t, hs.js) {
			ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		}
		if len(ids) != 2 || ids[1] != after {
			t.Fatalf("stream holds %v, want the first webhook and %s (not %s)", ids, after, down)
		}
		if got := outcomes(hs.h, "unavailable"); got != 1 {
			t.Errorf("unavailable counter %v, want 1", got)
		}
	})
	t.Run("no stream", func(t *testing.T) {
		t.Parallel()
		n := natstest.RunServer(t)
		hs := newHarness(t, n.ClientURL(), Config{})
		resp := hs.post(t, "/webhook/prompt", webhookBody(uuid.NewString()))
		if resp.Status != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("%d Retry-After=%q %s, want 503 with Retry-After 1", resp.Status, resp.Header.Get("Retry-After"), resp.Body)
		}
	})
	t.Run("subject taken by another stream", func(t *testing.T) {
		t.Parallel()
		n := natstest.RunServer(t)
		hs := newHarness(t, n.ClientURL(), Config{})
		if _, err := hs.js.CreateStream(natstest.Ctx(t), jetstream.StreamConfig{Name: "OTHER", Subjects: []string{contract.Default.SubjectWebhooks + ">"}}); err != nil {
			t.Fatal(err)
		}
		resp := hs.post(t, "/webhook/prompt", webhookBody(uuid.NewString()))
		if resp.Status != http.StatusServiceUnavailable {
			t.Fatalf("%d %s, want 503", resp.Status, resp.Body)
		}
	})
}

func TestBusyAtConcurrencyBound(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	createWebhooks(t, js, 1)
	gp := newGatePublisher(js)
	const bound = 2
	hs := newHarness(t, n.ClientURL(), Config{Publisher: gp, MaxInFlight: bound})

	results := make(chan response, bound)
	for range bound {
		go func() {
			resp, err := hs.try(natstest.Ctx(t), request{Path: "/webhook/video", Body: webhookBody(uuid.NewString())})
			if err != nil {
				resp.Status = -1
			}
			results <- resp
		}()
	}
	for range bound {
		natstest.RecvWithin(t, gp.entered, 10*time.Second)
	}
	if got := testutil.ToFloat64(hs.h.metrics.inFlight); got != bound {
		t.Errorf("in_flight %v, want %d", got, bound)
	}
	resp := hs.post(t, "/webhook/video", webhookBody(uuid.NewString()))
	var eb errorBody
	_ = json.Unmarshal(resp.Body, &eb)
	if resp.Status != http.StatusServiceUnavailable || eb.Error != "busy" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the bound: %d %s Retry-After=%q, want 503 busy with Retry-After", resp.Status, resp.Body, resp.Header.Get("Retry-After"))
	}
	close(gp.gate)
	for range bound {
		if r := natstest.RecvWithin(t, results, 10*time.Second); r.Status != http.StatusOK {
			t.Fatalf("held webhook answered %d %s", r.Status, r.Body)
		}
	}
	if msgs := stored(t, js); len(msgs) != bound {
		t.Fatalf("stream has %d, want %d", len(msgs), bound)
	}
	if got := outcomes(hs.h, "busy"); got != 1 {
		t.Errorf("busy counter %v", got)
	}
	if got := testutil.ToFloat64(hs.h.metrics.inFlight); got != 0 {
		t.Errorf("in_flight %v after all answered", got)
	}
	// Slots are released: the next webhook gets in.
	if resp := hs.post(t, "/webhook/video", webhookBody(uuid.NewString())); resp.Status != 200 {
		t.Fatalf("after release: %d %s", resp.Status, resp.Body)
	}
}

// TestPublishSurvivesSenderHangup: a webhook whose sender hung up while its publish waited is still
// stored and counted by its real outcome: the publish does not take the request's context, which net/http
// cancels when the sender hangs up.
func TestPublishSurvivesSenderHangup(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	_, js := natstest.Connect(t, n.ClientURL())
	createWebhooks(t, js, 1)
	gp := newGatePublisher(js)
	hs := newHarness(t, n.ClientURL(), Config{Publisher: gp})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := uuid.NewString()
	errc := make(chan error, 1)
	go func() {
		_, err := hs.try(ctx, request{Path: "/webhook/prompt", Body: webhookBody(id)})
		errc <- err
	}()
	natstest.RecvWithin(t, gp.entered, 10*time.Second)
	cancel()
	if err := natstest.RecvWithin(t, errc, 10*time.Second); err == nil {
		t.Fatal("client call succeeded, want it cancelled")
	}
	close(gp.gate)
	natstest.WaitFor(t, 10*time.Second, func() error {
		if got := outcomes(hs.h, outcomeAccepted); got != 1 {
			return fmt.Errorf("accepted counter %v", got)
		}
		return nil
	})
	msgs := stored(t, js)
	if len(msgs) != 1 || msgs[0].Header.Get(jetstream.MsgIDHeader) != id {
		t.Fatalf("stream has %d messages, want the one of %s", len(msgs), id)
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	n := natstest.RunServer(t)
	var mu sync.Mutex
	natsOK := true
	hs := newHarness(t, n.ClientURL(), Config{Ready: func() bool { mu.Lock(); defer mu.Unlock(); return natsOK }})
	get := func(path string) int { return hs.do(t, request{Method: "GET", Path: path}).Status }

	if s := get("/readyz"); s != 200 {
		t.Fatalf("readyz %d, want 200", s)
	}
	mu.Lock()
	natsOK = false
	mu.Unlock()
	if s := get("/readyz"); s != 503 {
		t.Fatalf("readyz with NATS unusable %d, want 503", s)
	}
	mu.Lock()
	natsOK = true
	mu.Unlock()
	hs.h.SetShuttingDown()
	if s := get("/readyz"); s != 503 {
		t.Fatalf("readyz after SetShuttingDown %d, want 503", s)
	}
	if s := get("/healthz"); s != 200 {
		t.Fatalf("healthz %d, want 200", s)
	}
	resp := hs.do(t, request{Method: "GET", Path: "/metrics"})
	if resp.Status != 200 || !strings.Contains(string(resp.Body), "bridge_ingest_webhooks_total") {
		t.Fatalf("metrics %d:\n%s", resp.Status, resp.Body)
	}
}

func TestConfigValidate(t *testing.T) {
	pub := newGatePublisher(nil)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no publisher", Config{}},
		{"negative body", Config{Publisher: pub, MaxBody: -1}},
		{"publish timeout over 5s", Config{Publisher: pub, PublishTimeout: 6 * time.Second}},
		{"negative publish timeout", Config{Publisher: pub, PublishTimeout: -time.Second}},
		{"negative in flight", Config{Publisher: pub, MaxInFlight: -1}},
		{"dotted modality", Config{Publisher: pub, Modalities: []string{"a.b"}}},
		{"reserved modality", Config{Publisher: pub, Modalities: []string{contract.ModalityUnknown}}},
		{"empty modality", Config{Publisher: pub, Modalities: []string{""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, want %v", err, ErrInvalidConfig)
			}
		})
	}
	if _, err := New(Config{Publisher: pub}); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
}
