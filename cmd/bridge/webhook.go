package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/evershield/bridge/budget"
	"github.com/evershield/bridge/ingest"
	"github.com/evershield/bridge/upstream"
)

var webhookCommand = &command{
	name: "webhook", summary: "point the account's webhooks at this bridge (receive-only use)",
	subs: []*command{
		{name: "register", args: "[-dry-run] [-insecure]", summary: "point every job of the account at this bridge's webhook endpoint", run: runWebhookRegister},
	},
}

const webhookRegisterUsage = `bridge webhook register [-dry-run] [-insecure]

Sets the account-wide webhook URL at the upstream (POST /webhook/register) to
<BRIDGE_PUBLIC_URL>/webhook?token=<BRIDGE_WEBHOOK_TOKEN>, so that every job of the account that carries no
webhook_url of its own, submitted through the bridge or anywhere else, reports to the bridge. Register it
once per account; calling it again replaces the URL.

It refuses without BRIDGE_WEBHOOK_TOKEN: anyone who learns the URL could otherwise post webhooks that
pass for the account's. With BRIDGE_WEBHOOK_SECRET set (an upstream that signs its webhooks) the token
may be left out; -insecure registers a URL without either. It reads BRIDGE_API_URL, BRIDGE_API_KEY (or
BRIDGE_API_KEY_FILE), BRIDGE_PUBLIC_URL, BRIDGE_WEBHOOK_TOKEN (or _FILE) and BRIDGE_WEBHOOK_SECRET (or
_FILE), and prints what it set, the token masked. After it, consider BRIDGE_ADOPT=true: every job of the
account is then the bridge's business.`

// runWebhookRegister is bridge webhook register.
func runWebhookRegister(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet("bridge webhook register", webhookRegisterUsage, c)
	dryRun := fs.Bool("dry-run", false, "print the URL that would be registered, and register nothing")
	insecure := fs.Bool("insecure", false, "register even without a token or a signing secret")
	if err := fs.noArgs(args); err != nil {
		return err
	}
	cfg, err := parseConfig(c.env)
	if err != nil {
		return usageError{err}
	}
	switch {
	case cfg.PublicURL == "":
		return usageError{errors.New("bridge webhook register: BRIDGE_PUBLIC_URL is required: the address the upstream reaches this bridge at")}
	case cfg.APIURL == "" || cfg.APIKey == "":
		return usageError{errors.New("bridge webhook register: BRIDGE_API_URL and BRIDGE_API_KEY are required")}
	case cfg.WebhookToken == "" && cfg.WebhookSecret == "" && !*insecure:
		return usageError{errors.New("bridge webhook register: set BRIDGE_WEBHOOK_TOKEN (or BRIDGE_WEBHOOK_SECRET for signed webhooks): " +
			"anyone could post webhooks to an unprotected URL; -insecure registers one anyway")}
	}
	hook := strings.TrimRight(cfg.PublicURL, "/") + ingest.PathWebhook
	shown := hook
	if cfg.WebhookToken != "" {
		hook += "?token=" + url.QueryEscape(cfg.WebhookToken)
		shown += "?token=" + mask(cfg.WebhookToken)
	}
	if *dryRun {
		fmt.Fprintf(c.stdout, "would register %s as the account's webhook URL (dry run: nothing registered)\n", shown)
		return nil
	}
	api, err := upstream.New(upstream.Config{BaseURL: cfg.APIURL, APIKey: cfg.APIKey, Limiter: budget.Unlimited{}})
	if err != nil {
		return usageError{fmt.Errorf("bridge webhook register: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := api.RegisterWebhook(ctx, hook); err != nil {
		return fmt.Errorf("bridge webhook register: %w", err)
	}
	fmt.Fprintf(c.stdout, "registered %s as the account's webhook URL\n", shown)
	return nil
}

// mask shows the first two characters of a secret and hides the rest.
func mask(secret string) string {
	if len(secret) <= 4 {
		return "****"
	}
	return secret[:2] + strings.Repeat("*", 6)
}
