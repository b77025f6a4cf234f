# ACL policy for the jobprogress services: register and deregister their own services,
# read the health of the others. Create it with:
#   consul acl policy create -name jobprogress -rules @consul/jobprogress-policy.hcl
#   consul acl token create -description "jobprogress services" -policy-name jobprogress
service "job-queue-service" {
  policy = "write"
}
service "worker-service" {
  policy = "write"
}
service "progress-service" {
  policy = "write"
}
# Lookups of healthy instances (health API) need to read services and nodes.
service_prefix "" {
  policy = "read"
}
node_prefix "" {
  policy = "read"
}
