// Placeholder until this view is built: says so in the page's language.
import { html } from './ui.js';

export default function View({ loc }) {
  return html`<section class="card"><h2>${loc.t('stub.title')}</h2><p>${loc.t('stub.body')}</p></section>`;
}
