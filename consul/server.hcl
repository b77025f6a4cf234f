# Consul server agent used by docker-compose.yml: a single-node server with the UI.
datacenter       = "dc1"
data_dir         = "/consul/data"
server           = true
bootstrap_expect = 1
client_addr      = "0.0.0.0"
bind_addr        = "0.0.0.0"
ui_config {
  enabled = true
}
ports {
  http = 8500
  dns  = 8600
}
# ACLs are off in the local compose setup. To turn them on, set enabled = true and
# default_policy = "deny", create a token with consul/jobprogress-policy.hcl and give it
# to the services as CONSUL_HTTP_TOKEN.
acl {
  enabled                  = false
  default_policy           = "allow"
  enable_token_persistence = true
}
