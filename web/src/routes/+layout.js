// Rendered in the browser only: the control plane serves the shell for every page path.
export const ssr = false;
export const prerender = false;
