package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The dashboard acts with the user's kube credentials (tap, check), so a
// listener on loopback is not enough: a web page can rebind its own name
// to 127.0.0.1 and read what the dashboard answers, and another local
// user can connect to the port. Guard lets a request through only when
//
//   - its Host is a loopback name with the dashboard's port (a rebound
//     name arrives with the attacker's Host);
//   - its Origin, when it has one, is one of those same origins;
//   - it carries the per-run token: in the URL the command prints, which
//     is answered with an HttpOnly, SameSite=Strict cookie and a redirect
//     to the same page without it, or in that cookie.

// TokenParam is the query parameter of the URL `linkerd dashboard` prints.
const TokenParam = "token"

// NewToken returns a fresh random token (256 bits, URL-safe).
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("dashboard token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// CookieName is the token cookie of the dashboard on port: cookies are
// not scoped by port, so two dashboards must not share a name.
func CookieName(port int) string { return "linkerd-dashboard-" + strconv.Itoa(port) }

// Guard wraps h so that only requests from the user's own browser session
// on this machine reach it (see above). port is the port the dashboard
// listens on; token comes from NewToken.
func Guard(h http.Handler, port int, token string) http.Handler {
	p := strconv.Itoa(port)
	hosts := map[string]bool{"127.0.0.1:" + p: true, "localhost:" + p: true, "[::1]:" + p: true}
	cookie := CookieName(port)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hosts[strings.ToLower(r.Host)] {
			refuse(w, http.StatusMisdirectedRequest, fmt.Sprintf("Host %q is not this dashboard's: open http://127.0.0.1:%s/ (a web page that rebinds its name to this machine gets this answer)", r.Host, p))
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			u, err := url.Parse(o)
			if err != nil || u.Scheme != "http" || !hosts[strings.ToLower(u.Host)] {
				refuse(w, http.StatusForbidden, fmt.Sprintf("requests from origin %q are refused: only this dashboard's own pages may call it", o))
				return
			}
		}
		if q := r.URL.Query().Get(TokenParam); q != "" {
			if !equal(q, token) {
				refuse(w, http.StatusForbidden, "wrong dashboard token: open the URL `linkerd dashboard` printed")
				return
			}
			http.SetCookie(w, &http.Cookie{Name: cookie, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			// The token leaves the address bar, the history and any
			// Referer at once.
			clean := *r.URL
			v := clean.Query()
			v.Del(TokenParam)
			clean.RawQuery = v.Encode()
			clean.Scheme, clean.Host = "", ""
			w.Header().Set("Cache-Control", "no-store")
			http.Redirect(w, r, clean.RequestURI(), http.StatusSeeOther)
			return
		}
		if c, err := r.Cookie(cookie); err != nil || !equal(c.Value, token) {
			refuse(w, http.StatusForbidden, "no dashboard token: open the URL `linkerd dashboard` printed (it carries a token for this run)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}
