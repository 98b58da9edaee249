"""The demo fleet: four regions, seven PoPs at their real cities, two services, 63 backends.

Every backend lives on loopback (127.1.<pop>.<n>) so the demo and tests probe nothing else;
VIPs and anycast prefixes come from documentation ranges and are only ever data.
"""

from __future__ import annotations

REGIONS = [
    # slug, name, lat, lon
    ("ap-south", "Asia Pacific (South)", 17.0, 77.0),
    ("ap-southeast", "Asia Pacific (Southeast)", 1.35, 103.82),
    ("eu-west", "Europe (West)", 50.5, 4.5),
    ("us-east", "US East", 39.5, -76.0),
]

POPS = [
    # slug, region, name, city, lat, lon
    ("bom1", "ap-south", "Mumbai 1", "Mumbai", 19.0760, 72.8777),
    ("maa1", "ap-south", "Chennai 1", "Chennai", 13.0827, 80.2707),
    ("sin1", "ap-southeast", "Singapore 1", "Singapore", 1.3521, 103.8198),
    ("fra1", "eu-west", "Frankfurt 1", "Frankfurt", 50.1109, 8.6821),
    ("lhr1", "eu-west", "London 1", "London", 51.5074, -0.1278),
    ("iad1", "us-east", "Ashburn 1", "Ashburn", 39.0438, -77.4874),
    ("jfk1", "us-east", "New York 1", "New York", 40.7128, -74.0060),
]

PREFIXES = [
    ("198.51.100.0/24", "api anycast"),
    ("203.0.113.0/24", "static anycast"),
]

SERVICES = [
    # slug, fqdn, port, protocol, policy, ttl, prefix
    ("api", "api.example.net", 443, "http", "weighted", 30, "198.51.100.0/24"),
    ("static", "static.example.net", 443, "tcp", "geo", 60, "203.0.113.0/24"),
]

VIPS = {
    # service -> region -> (address, weight, priority)
    "api": {
        "ap-south": ("192.0.2.10", 100, 1),
        "ap-southeast": ("192.0.2.20", 60, 2),
        "eu-west": ("192.0.2.30", 100, 1),
        "us-east": ("192.0.2.40", 100, 1),
    },
    "static": {
        "ap-south": ("203.0.113.10", 100, 1),
        "ap-southeast": ("203.0.113.20", 100, 2),
        "eu-west": ("203.0.113.30", 100, 1),
        "us-east": ("203.0.113.40", 100, 1),
    },
}

CLIENT_NETWORKS = [
    ("198.18.0.0/24", "ap-south", "resolvers in India"),
    ("198.18.1.0/24", "ap-southeast", "resolvers in Southeast Asia"),
    ("198.18.2.0/24", "eu-west", "resolvers in Europe"),
    ("198.18.3.0/24", "us-east", "resolvers in North America"),
    ("2001:db8:100::/48", "eu-west", "IPv6 resolvers in Europe"),
]

MONITORS = [
    # slug, kind, path, expected
    ("http-healthz", "http", "/healthz", "200-399"),
    ("tcp-connect", "tcp", "/", "200-399"),
]

# pool slug -> (service, mode, path prefix, priority, backends, port, capacity each, expected load, monitor)
POOLS = {
    "api-web": ("api", "l7", "", 200, 4, 8080, 1200, 2600, "http-healthz"),
    "pay-pci": ("api", "l7", "/payments", 10, 3, 8443, 400, 420, "http-healthz"),
    "static-l4": ("static", "l4", "", 100, 2, 9000, 3000, 1200, "tcp-connect"),
}
