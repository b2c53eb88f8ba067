//go:build tools

package tools

import (
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/hashicorp/go-retryablehttp"
	_ "github.com/stretchr/testify/require"
	_ "github.com/temporalio/ui-server/v2/server"
	_ "go.temporal.io/api/workflowservice/v1"
	_ "go.temporal.io/sdk/client"
	_ "go.temporal.io/sdk/contrib/envconfig"
	_ "go.temporal.io/server/temporaltest"
	_ "go.uber.org/fx"
	_ "gopkg.in/yaml.v3"
)
