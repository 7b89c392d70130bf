package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"

	"github.com/evershield/bridge/contract"
)

// Contracts of the upstream, the values of Config.Contract: [contract.ContractV1], [contract.ContractV2]
// and [contract.ContractAuto], named here too for the client's callers. An auto client settles on v1 or
// v2 from the upstream's answers to submissions, without billing a probe job (see [Client.Submit]).
const (
	ContractV1   = contract.ContractV1
	ContractV2   = contract.ContractV2
	ContractAuto = contract.ContractAuto
)

// decided contract of a client, kept in an atomic.
const (
	undecided int32 = iota
	decidedV1
	decidedV2
)

// retiredV1 are the v1 submission paths the v2 contract retired; v2 folds them into /moderate/text.
var retiredV1 = map[string]bool{"prompt": true, "chat": true}

// fieldsV2 renames a v1 form field to its v2 name.
var fieldsV2 = map[string]string{"prompt": "text", "image_url": "image", "video_url": "video", "audio_url": "audio"}

// Route is where one submission goes under a contract: the upstream path's modality and the form fields
// named for it.
type Route struct {
	// Modality is the path's last segment: POST /moderate/<Modality>.
	Modality string
	// Fields are the form fields under the contract's names.
	Fields map[string]string
}

// RouteFor maps a submission of modality with fields to contract (ContractV1 or ContractV2). In v1 it
// goes as given (modalities and fields are not checked against a list). In v2, prompt and chat go to
// /moderate/text, and the v1 field names are translated: prompt → text, image_url → image, video_url →
// video (audio_url → audio); v2 names pass as given. A form that would carry a field twice after the
// translation (prompt and text) is an error matching [ErrInvalidArgument] that names both.
func RouteFor(contract, modality string, fields map[string]string) (Route, error) {
	switch contract {
	case ContractV1:
		return Route{Modality: modality, Fields: fields}, nil
	case ContractV2:
	default:
		return Route{}, fmt.Errorf("%w: contract %q", ErrInvalidArgument, contract)
	}
	r := Route{Modality: modality, Fields: make(map[string]string, len(fields))}
	if retiredV1[modality] {
		r.Modality = "text"
	}
	for k, v := range fields {
		if n, ok := fieldsV2[k]; ok {
			if _, clash := fields[n]; clash {
				return Route{}, fmt.Errorf("%w: fields %s and %s are the same field in the v2 contract", ErrInvalidArgument, k, n)
			}
			k = n
		}
		r.Fields[k] = v
	}
	return r, nil
}

// Contract is the contract the client speaks now: ContractV1 or ContractV2, or ContractAuto while an
// auto client has not decided yet.
func (c *Client) Contract() string {
	switch c.decided.Load() {
	case decidedV1:
		return ContractV1
	case decidedV2:
		return ContractV2
	}
	return ContractAuto
}

// decide settles an auto client on v (decidedV1 or decidedV2) and logs the choice once.
func (c *Client) decide(v int32, why string) {
	old := c.decided.Swap(v)
	if old == v {
		return
	}
	to := ContractV1
	if v == decidedV2 {
		to = ContractV2
	}
	c.log.Info().Str("contract", to).Str("reason", why).Msg("upstream contract decided (BRIDGE_API_CONTRACT=auto)")
}

// gone reports whether err is the answer of a path the upstream does not have: 404 or 410. Only then a
// retired v1 path created no job.
func gone(err error) bool {
	ue, ok := errors.AsType[*Error](err)
	return ok && (ue.Status == http.StatusNotFound || ue.Status == http.StatusGone)
}

// probe decides an undecided auto client without creating a job: it posts an empty form to
// /moderate/prompt, which a v1 upstream refuses (400: prompt is required) and a v2 upstream answers 410
// (retired). Neither creates a job, so nothing is billed; the call spends one request of the budget.
// Answers that say nothing about the contract (429, 5xx, 401, no answer) leave it undecided. Only busy
// and ctx errors are returned.
func (c *Client) probe(ctx context.Context) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.Close()
	_, err := c.do(ctx, request{class: ClassSubmit, ep: "POST /moderate/prompt", method: http.MethodPost,
		path: "/moderate/prompt", body: &body, ctype: mw.FormDataContentType()})
	ue, ok := errors.AsType[*Error](err)
	switch {
	case err == nil:
		c.decide(decidedV1, "/moderate/prompt took an empty probe")
	case !ok:
		return err // busy, or ctx ended while waiting for budget
	case gone(err):
		c.decide(decidedV2, fmt.Sprintf("/moderate/prompt answered %d to an empty probe", ue.Status))
	case ue.Status == http.StatusBadRequest || ue.Status == http.StatusForbidden || ue.Status == http.StatusPaymentRequired:
		c.decide(decidedV1, fmt.Sprintf("/moderate/prompt answered %d to an empty probe", ue.Status))
	}
	return nil
}
