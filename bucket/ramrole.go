package bucket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
)

// ECSMetadataRoles is where an ECS instance's metadata service lists the
// credentials of its RAM roles; a role's are at ECSMetadataRoles + name.
const ECSMetadataRoles = "http://100.100.100.200/latest/meta-data/ram/security-credentials/"

// ramRoleProvider gets temporary credentials of an ECS RAM role from url
// (ossfs's ram_role takes this URL). The SDK's own ECS provider cannot be
// given a URL, so only the fetch is ours: its fetcher provider caches the
// credentials and fetches again before they expire.
func ramRoleProvider(url string) credentials.CredentialsProvider {
	client := &http.Client{Timeout: 10 * time.Second}
	return credentials.NewCredentialsFetcherProvider(credentials.CredentialsFetcherFunc(
		func(ctx context.Context) (credentials.Credentials, error) {
			return fetchRAMRole(ctx, client, url)
		}))
}

// errRoleCredentials is the metadata service answering, but with no
// credentials: a configuration problem (mapped to ErrAccessDenied), not a
// transient one.
var errRoleCredentials = errors.New("no ECS RAM role credentials")

func fetchRAMRole(ctx context.Context, client *http.Client, url string) (credentials.Credentials, error) {
	var none credentials.Credentials
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return none, fmt.Errorf("ECS RAM role credentials: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return none, fmt.Errorf("ECS RAM role credentials: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return none, fmt.Errorf("%w from %s: HTTP %d (is the role attached to this instance?)", errRoleCredentials, url, resp.StatusCode)
	}
	var body struct {
		AccessKeyId, AccessKeySecret, SecurityToken, Code string
		Expiration                                        time.Time
	}
	// The body holds the secret: errors never quote it.
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return none, fmt.Errorf("%w from %s: not the expected JSON", errRoleCredentials, url)
	}
	if body.Code != "" && !strings.EqualFold(body.Code, "Success") {
		return none, fmt.Errorf("%w from %s: code %q", errRoleCredentials, url, body.Code)
	}
	if body.AccessKeyId == "" || body.AccessKeySecret == "" {
		return none, fmt.Errorf("%w from %s: no access key in the answer", errRoleCredentials, url)
	}
	c := credentials.Credentials{AccessKeyID: body.AccessKeyId, AccessKeySecret: body.AccessKeySecret, SecurityToken: body.SecurityToken}
	if !body.Expiration.IsZero() {
		c.Expires = &body.Expiration
	}
	return c, nil
}
