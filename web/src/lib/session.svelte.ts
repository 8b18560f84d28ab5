// The signed-in user: the JWT and what the dashboard shows of it, kept in localStorage. The
// JWT's claims are display hints only; what a user may do is decided by the API on every call.
const KEY = 'wrenn.session';

function decode(token) {
	try {
		const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
		return JSON.parse(atob(part));
	} catch {
		return {};
	}
}

function load() {
	try {
		return JSON.parse(localStorage.getItem(KEY) ?? 'null');
	} catch {
		return null;
	}
}

class Session {
	token = $state(null);
	user = $state(null); // { user_id, name, email, team_id, role, is_admin }

	constructor() {
		const saved = typeof localStorage === 'undefined' ? null : load();
		if (saved?.token) this.set(saved.token, saved.user);
	}

	/** Adopt a new JWT (login, signup, switch team); `extra` overrides the claims. */
	set(token, extra = {}) {
		const claims = decode(token);
		if (claims.exp && claims.exp * 1000 < Date.now()) return this.clear();
		this.token = token;
		this.user = {
			user_id: claims.sub,
			name: claims.name,
			email: claims.email,
			team_id: claims.team_id,
			role: claims.role,
			is_admin: !!claims.is_admin,
			...extra
		};
		localStorage.setItem(KEY, JSON.stringify({ token: this.token, user: this.user }));
	}

	clear() {
		this.token = null;
		this.user = null;
		localStorage.removeItem(KEY);
	}
}

export const session = new Session();
