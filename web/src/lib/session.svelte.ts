// The signed-in user: the JWT and what the dashboard shows of it, kept in localStorage. The
// JWT's claims are display hints only; what a user may do is decided by the API on every call.
const KEY = 'wrenn.session';

export interface SessionUser {
	user_id: string;
	name: string;
	email: string;
	team_id: string;
	role: string | null;
	is_admin: boolean;
}

interface Claims {
	sub?: string;
	name?: string;
	email?: string;
	team_id?: string;
	role?: string;
	is_admin?: boolean;
	exp?: number;
}

function decode(token: string): Claims {
	try {
		const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
		return JSON.parse(atob(part)) as Claims;
	} catch {
		return {};
	}
}

function load(): { token?: string; user?: Partial<SessionUser> } | null {
	try {
		return JSON.parse(localStorage.getItem(KEY) ?? 'null');
	} catch {
		return null;
	}
}

class Session {
	token = $state<string | null>(null);
	user = $state<SessionUser | null>(null);

	constructor() {
		const saved = typeof localStorage === 'undefined' ? null : load();
		if (saved?.token) this.set(saved.token, saved.user);
	}

	/** Adopt a new JWT (login, signup, switch team); `extra` overrides the claims. */
	set(token: string, extra: Partial<SessionUser> = {}): void {
		const claims = decode(token);
		if (claims.exp && claims.exp * 1000 < Date.now()) return this.clear();
		this.token = token;
		this.user = {
			user_id: claims.sub ?? '',
			name: claims.name ?? '',
			email: claims.email ?? '',
			team_id: claims.team_id ?? '',
			role: claims.role ?? null,
			is_admin: !!claims.is_admin,
			...extra
		};
		localStorage.setItem(KEY, JSON.stringify({ token: this.token, user: this.user }));
	}

	clear(): void {
		this.token = null;
		this.user = null;
		localStorage.removeItem(KEY);
	}
}

export const session = new Session();
