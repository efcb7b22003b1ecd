package cgroup

import "testing"

func TestScopeUnit(t *testing.T) {
	for name, want := range map[string]string{
		"api":       "guardrun-api.scope",
		"api-v2":    "guardrun-api-v2.scope",
		"node:3000": "guardrun-node:3000.scope",
		"a\\b":      `guardrun-a\x5cb.scope`,
		"café":      `guardrun-caf\xc3\xa9.scope`,
		"x+y@z":     `guardrun-x\x2by\x40z.scope`,
	} {
		if got := ScopeUnit(name); got != want {
			t.Errorf("ScopeUnit(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestOriginService(t *testing.T) {
	for _, c := range []struct{ manager, own, want string }{
		{"system", "/sys/fs/cgroup/system.slice/api.service", "api.service"},
		{"system", "/sys/fs/cgroup/system.slice/system-app.slice/app@1.service", "app@1.service"},
		{"system", "/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope", ""},
		{"system", "/sys/fs/cgroup/system.slice", ""},
		{"user", "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/api.service", "api.service"},
		{"user", "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope", ""},
		// A system unit with User=: not the user manager's to bind to.
		{"user", "/sys/fs/cgroup/system.slice/api.service", ""},
		{"user", "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service", ""},
	} {
		if got := originService(c.manager, c.own); got != c.want {
			t.Errorf("originService(%s, %s) = %q, want %q", c.manager, c.own, got, c.want)
		}
	}
}
