package browsertest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/umbra-iot/umbra/broker"
	"github.com/umbra-iot/umbra/brokertest"
	"github.com/umbra-iot/umbra/internal/auth"
)

// TestLogin: with authentication on, the dashboard asks for an API key,
// rejects a wrong one, keeps working (the event stream included, which
// needs the key in a header) with a right one, names the key and its role,
// offers a viewer no Edit (saying why), and forgets the key on sign-out.
func TestLogin(t *testing.T) {
	b := newBrowser(t)
	admin, viewer := auth.NewSecret(), auth.NewSecret()
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Auth = broker.AuthOptions{Enabled: true, APIKeys: []auth.APIKeyConfig{
			{Name: "admin", SHA256: auth.SHA256Hex(admin), Role: auth.RoleAdmin},
			{Name: "noc-screen", SHA256: auth.SHA256Hex(viewer), Role: auth.RoleViewer},
		}}
	})
	base := srv.HTTPURL()
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("gw-%d", i)
		call(t, base, admin, "POST", "/api/things", fmt.Sprintf(`{"thingName":%q,"attributes":{"site":"north"}}`, name), http.StatusCreated)
		call(t, base, admin, "POST", "/things/"+name+"/shadow", `{"state":{"reported":{"firmware_version":"1.0.0"}}}`, http.StatusOK)
	}

	b.do("open the dashboard", chromedp.Navigate(base+"/ui/"))
	b.waitJS("the login form", `document.querySelector('[data-testid=login]')`)
	b.screenshot("login")

	b.fill("#api-key", "not-a-key")
	b.do("sign in with a wrong key", chromedp.Click(`[data-testid=login] button[type=submit]`))
	b.waitJS("the login error", `document.querySelector('[data-testid=login-error]').textContent.includes('not valid')`)

	b.fill("#api-key", viewer)
	b.do("sign in", chromedp.Click(`[data-testid=login] button[type=submit]`))
	b.waitJS("the fleet table", `!document.querySelector('[data-testid=login]') && document.querySelectorAll('tr[data-testid=thing-row]').length === 3`)
	if got := eval[string](b, `sessionStorage.getItem('umbra.apiKey')`); got != viewer {
		t.Errorf("sessionStorage key = %q", got)
	}
	if got := eval[string](b, `localStorage.length + ''`); got != "0" {
		t.Errorf("something was written to localStorage")
	}
	b.waitJS("the live stream, authenticated", `document.querySelector('[data-testid=stream-state]').dataset.state === 'live'`)
	call(t, base, admin, "POST", "/things/gw-2/shadow", `{"state":{"reported":{"firmware_version":"1.1.0"}}}`, http.StatusOK)
	b.waitJS("the live update", `document.querySelector('tr[data-thing="gw-2"] [data-testid=firmware]').textContent === '1.1.0'`)

	// The sidebar names the key and its role (GET /api/whoami).
	if got := eval[string](b, `document.querySelector('[data-testid=whoami]').textContent`); got != "noc-screen · viewer" {
		t.Errorf("signed in as %q, want \"noc-screen · viewer\"", got)
	}

	// A viewer may look but not change desired state: the button says why.
	b.do("open gw-1", chromedp.Click(`tr[data-thing="gw-1"] a.thing-link`))
	b.waitJS("the thing view", `document.querySelector('[data-testid=thing-name]')?.textContent === 'gw-1'`)
	if !eval[bool](b, `document.querySelector('[data-testid=edit-desired]').disabled`) {
		t.Errorf("a viewer can press Edit on desired state")
	}
	if got := eval[string](b, `document.querySelector('[data-testid=edit-desired]').title`); !strings.Contains(got, "viewer role") {
		t.Errorf("the disabled Edit button's title = %q, want the role named", got)
	}
	b.do("open rollouts", chromedp.Click(`[data-testid=nav-rollouts]`))
	b.waitJS("no New rollout for a viewer", `document.querySelector('[data-testid=new-rollout]')?.getAttribute('aria-disabled') === 'true'`)
	b.do("back to gw-1", chromedp.Navigate(base+"/ui/#/things/gw-1"))
	b.waitJS("the thing view again", `document.querySelector('[data-testid=thing-name]')?.textContent === 'gw-1'`)

	// Reloading keeps the session; signing out forgets the key.
	b.do("reload", chromedp.Reload())
	b.waitJS("still signed in", `document.querySelector('[data-testid=thing-name]')?.textContent === 'gw-1'`)
	b.do("sign out", chromedp.Click(`[data-testid=sign-out]`))
	b.waitJS("the login form again", `document.querySelector('[data-testid=login]')`)
	if got := eval[bool](b, `sessionStorage.getItem('umbra.apiKey') === null`); !got {
		t.Error("the key is still in sessionStorage after sign-out")
	}
}
