// Package docs holds the contract of the bridge as documents: DESIGN.md, the JSON Schemas in schema/, the
// OpenAPI document of the HTTP side and the AsyncAPI document of the NATS side. It has no code; its tests
// check the documents against the code and validate real messages of the pipeline against the schemas, so
// that the documents cannot drift from what the bridge does.
package docs
