/**
 * The dashboard's static files, bundled into the Worker as text (see `rules` in wrangler.jsonc) and served by it
 * from /dashboard/assets/: no CDN, no second origin, nothing for a phone on a captive network to fail to fetch.
 * They hold no data, so they are served without a session (the login page uses the stylesheet); every URL carries
 * a hash of the content, so browsers may keep them for a year.
 */
import uplotJs from 'uplot/dist/uPlot.iife.min.js';
import uplotCss from 'uplot/dist/uPlot.min.css';
import dashboardCss from './client/dashboard.css';
import dashboardJs from './client/dashboard.browser.js';
import dashboardChartsJs from './client/dashboard-charts.browser.js';
import keysJs from './client/keys.browser.js';

interface Asset {
  body: string;
  type: string;
}

const ASSETS: Record<string, Asset> = {
  'uplot.js': { body: uplotJs, type: 'text/javascript; charset=utf-8' },
  'uplot.css': { body: uplotCss, type: 'text/css; charset=utf-8' },
  'dashboard-charts.js': { body: dashboardChartsJs, type: 'text/javascript; charset=utf-8' },
  'dashboard.js': { body: dashboardJs, type: 'text/javascript; charset=utf-8' },
  'keys.js': { body: keysJs, type: 'text/javascript; charset=utf-8' },
  'dashboard.css': { body: dashboardCss, type: 'text/css; charset=utf-8' },
};

export type AssetName = 'uplot.js' | 'uplot.css' | 'dashboard-charts.js' | 'dashboard.js' | 'keys.js' | 'dashboard.css';

/** FNV-1a: a cache-busting fingerprint, not a security measure. */
function fingerprint(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

const versions = new Map<string, string>();

function versionOf(name: string, asset: Asset): string {
  let v = versions.get(name);
  if (v === undefined) versions.set(name, (v = fingerprint(asset.body)));
  return v;
}

/** The URL of an asset, with its fingerprint. */
export function assetUrl(name: AssetName): string {
  return `/dashboard/assets/${name}?v=${versionOf(name, ASSETS[name]!)}`;
}

/** The response for /dashboard/assets/<name>, or undefined when there is no such asset. */
export function assetResponse(name: string, version: string | undefined): Response | undefined {
  const asset = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
  if (!asset) return undefined;
  const current = versionOf(name, asset);
  return new Response(asset.body, {
    headers: {
      'content-type': asset.type,
      'x-content-type-options': 'nosniff',
      // An old fingerprint gets today's file, but only for this once.
      'cache-control': version === current ? 'public, max-age=31536000, immutable' : 'no-cache',
      etag: `"${current}"`,
    },
  });
}
