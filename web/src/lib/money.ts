// Money is integer minor units (bigint from the shape, bigint from the API). Formatting goes
// through a decimal string, never a float, so 2^53+ amounts and 3-decimal currencies stay exact.
const digitsCache = new Map<string, number>();

export function fractionDigits(currency: string): number {
  let d = digitsCache.get(currency);
  if (d === undefined) {
    try {
      d = new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits ?? 2;
    } catch {
      d = 2;
    }
    digitsCache.set(currency, d);
  }
  return d;
}

/** "123456" minor units of EUR → "1234.56" (exact). */
export function minorToDecimal(minor: bigint | number | string, currency: string): string {
  const d = fractionDigits(currency);
  let v = BigInt(minor);
  const neg = v < 0n;
  if (neg) v = -v;
  const s = v.toString().padStart(d + 1, '0');
  const whole = s.slice(0, s.length - d);
  const frac = d ? '.' + s.slice(s.length - d) : '';
  return (neg ? '-' : '') + whole + frac;
}

export function formatMoney(minor: bigint | number | string | null | undefined, currency: string, locale?: string): string {
  if (minor === null || minor === undefined || minor === '') return '—';
  const decimal = minorToDecimal(minor, currency);
  try {
    // Intl.NumberFormat formats a decimal string exactly (no conversion to a double).
    return new Intl.NumberFormat(locale, { style: 'currency', currency }).format(decimal as unknown as number);
  } catch {
    return `${decimal} ${currency}`;
  }
}

/**
 * Parses a user's decimal ("1,234.5", "12") into integer units of 10^-scale, exactly; null
 * when it is not a number or has more decimals than the scale allows.
 */
export function parseScaled(input: string, scale: number): bigint | null {
  const s = input.trim().replace(/[\s,_]/g, '');
  const m = /^(-)?(\d*)(?:\.(\d*))?$/.exec(s);
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) return null;
  const frac = m[3] ?? '';
  if (frac.length > scale) return null;
  const v = BigInt((m[2] || '0') + frac.padEnd(scale, '0'));
  return m[1] ? -v : v;
}

export function parseMoney(input: string, currency: string): bigint | null {
  return parseScaled(input, fractionDigits(currency));
}

/** 1500 → "1.5" */
export function milliToDecimal(milli: bigint | number | string): string {
  const v = BigInt(milli);
  const whole = v / 1000n;
  const frac = (v < 0n ? -v : v) % 1000n;
  return frac === 0n ? whole.toString() : `${whole}.${frac.toString().padStart(3, '0').replace(/0+$/, '')}`;
}

/** 190000 ppm → "19" (%) */
export function ppmToPercent(ppm: bigint | number | string): string {
  const v = BigInt(ppm);
  const whole = v / 10000n;
  const frac = v % 10000n;
  return frac === 0n ? whole.toString() : `${whole}.${frac.toString().padStart(4, '0').replace(/0+$/, '')}`;
}

export function formatDate(iso: string | null | undefined, locale?: string): string {
  if (!iso) return '—';
  const d = new Date(iso.length === 10 ? iso + 'T00:00:00' : iso);
  if (isNaN(d.getTime())) return iso;
  return new Intl.DateTimeFormat(locale, iso.length === 10 ? { dateStyle: 'medium' } : { dateStyle: 'medium', timeStyle: 'short' }).format(d);
}
