# Real test servers on loopback (FerretDB, fake-gcs-server, OpenSearch,
# Elasticsearch 8): see scripts/services.sh. Included by the main Makefile.
#
#   make services        build what is missing (cached outside the repo) and
#                        start them; idempotent, fast when already up
#   make services-down   stop them and remove their data
#
# Recipes that need the servers can depend on `services` and read the URLs
# with:  . ./$(SERVICES_ENV) && <command>

SERVICES_SH  ?= scripts/services.sh
SERVICES_ENV ?= .services.env

.PHONY: services services-down services-status

services:
	bash $(SERVICES_SH) up

services-down:
	bash $(SERVICES_SH) down

services-status:
	bash $(SERVICES_SH) status
