package bucket

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestFetchRAMRole(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		status     int
		ok         bool // else: errRoleCredentials, with no secret in the message
	}{
		{"good", `{"Code":"Success","AccessKeyId":"id","AccessKeySecret":"s3cret","SecurityToken":"tok","Expiration":"2030-01-01T00:00:00Z"}`, 200, true},
		{"no role", `not found`, 404, false},
		{"failure code", `{"Code":"Failed","AccessKeyId":"id","AccessKeySecret":"s3cret"}`, 200, false},
		{"no key", `{"Code":"Success","AccessKeySecret":"s3cret"}`, 200, false},
		{"not JSON", `AccessKeySecret=s3cret`, 200, false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			w.Write([]byte(tc.body))
		}))
		c, err := fetchRAMRole(context.Background(), srv.Client(), srv.URL+"/role")
		srv.Close()
		if tc.ok {
			if err != nil || c.AccessKeyID != "id" || c.AccessKeySecret != "s3cret" || c.SecurityToken != "tok" || c.Expires == nil {
				t.Errorf("%s: %+v %v", tc.name, c, err)
			}
			continue
		}
		if !errors.Is(err, errRoleCredentials) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v", tc.name, err)
		}
		if convert(context.Background(), "ListObjectsV2", "", err).(*Error).Kind != ErrAccessDenied {
			t.Errorf("%s: not mapped to access denied", tc.name)
		}
	}
}
