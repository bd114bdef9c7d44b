"""The gateway: the platform's one public entry (API keys, tenants, rate limits, forwarding). See docs/gateway.md."""
