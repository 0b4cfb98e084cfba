'use strict';
// Just enough semver to check `engines.node` ranges against `process.version` (the stand-in has
// no dependencies): comparators >=, <=, >, <, =, ^, ~, x-ranges and partial versions, joined by
// spaces (and) and `||` (or). Prerelease tags order below their release. `compareVersions` orders
// two releases (calendar versions like 2026.9.5 or 2026.5.3-1 are compared as semver).

function parse(text) {
  const m = /^v?(\d+|[xX*])?(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?/.exec(text.trim());
  const part = (s) => (s === undefined || /^[xX*]$/.test(s) ? null : Number(s));
  return { nums: [part(m[1]), part(m[2]), part(m[3])], pre: m[4] ? m[4].split('.') : [] };
}

function full(nums) {
  return nums.map((n) => n ?? 0);
}

function comparePre(a, b) {
  if (!a.length || !b.length) {
    return (a.length ? -1 : 0) + (b.length ? 1 : 0);
  }
  for (let i = 0; i < Math.max(a.length, b.length); i += 1) {
    if (a[i] === undefined || b[i] === undefined) {
      return a[i] === undefined ? -1 : 1;
    }
    const [x, y] = [Number(a[i]), Number(b[i])];
    const cmp = Number.isNaN(x) || Number.isNaN(y) ? a[i].localeCompare(b[i]) : x - y;
    if (cmp) {
      return Math.sign(cmp);
    }
  }
  return 0;
}

function compare(a, b) {
  const [x, y] = [full(a.nums), full(b.nums)];
  for (let i = 0; i < 3; i += 1) {
    if (x[i] !== y[i]) {
      return x[i] < y[i] ? -1 : 1;
    }
  }
  return comparePre(a.pre, b.pre);
}

// The first version above a partial one: 24 -> 25.0.0, 24.16 -> 24.17.0.
function bump(nums, index) {
  const out = full(nums).slice(0, index + 1);
  out[index] += 1;
  return { nums: [...out, 0, 0].slice(0, 3), pre: [] };
}

function specified(nums) {
  return nums.filter((n) => n !== null).length;
}

// A comparator as a list of [op, version] bounds that must all hold.
function bounds(token) {
  const m = /^(>=|<=|>|<|=|\^|~)?(.*)$/.exec(token);
  const op = m[1] || '';
  const v = parse(m[2]);
  const n = specified(v.nums);
  if (n === 0) {
    return [];
  }
  const low = { nums: full(v.nums), pre: v.pre };
  switch (op) {
    case '>=': return [['>=', low]];
    case '>': return n < 3 ? [['>=', bump(v.nums, n - 1)]] : [['>', low]];
    case '<': return [['<', low]];
    case '<=': return n < 3 ? [['<', bump(v.nums, n - 1)]] : [['<=', low]];
    case '^': {
      const nums = full(v.nums);
      const idx = nums[0] > 0 || n === 1 ? 0 : nums[1] > 0 || n === 2 ? 1 : 2;
      return [['>=', low], ['<', bump(v.nums, idx)]];
    }
    case '~': return [['>=', low], ['<', bump(v.nums, n === 1 ? 0 : 1)]];
    default: return n < 3 ? [['>=', low], ['<', bump(v.nums, n - 1)]] : [['=', low]];
  }
}

function holds([op, bound], version) {
  const c = compare(version, bound);
  return { '>=': c >= 0, '>': c > 0, '<': c < 0, '<=': c <= 0, '=': c === 0 }[op];
}

function satisfies(versionText, range) {
  const version = parse(versionText);
  return range.split('||').some((alt) => {
    const tokens = alt.trim().replace(/(>=|<=|>|<|=|\^|~)\s+/g, '$1').split(/\s+/).filter(Boolean);
    return tokens.every((token) => bounds(token).every((b) => holds(b, version)));
  });
}

function compareVersions(a, b) {
  return compare(parse(a), parse(b));
}

module.exports = { satisfies, compareVersions };
