"""Data planes (HAProxy, PowerDNS, ExaBGP): what they report and, as integrations land, what we push."""
