import { redirect } from '@sveltejs/kit';

// /admin opens on the members.
export function load() {
  redirect(307, '/admin/members');
}
