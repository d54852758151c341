// Command-line helpers shared by node/detect.mjs and web/test/run_page.mjs. Node's
// util.parseArgs (strict) takes a value that starts with '-' for an option ("--max-images -1":
// "argument is ambiguous") and a following option for a missing value; this parser says what
// is wrong in one line instead: "--image needs a value", "give --model once".
import fs from 'node:fs';

/** A mistake in the command line or its files: reported as one line, exit status 2. */
export class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A value as a message shows it: as typed, or "" when empty. */
export const shown = (text) => (text === '' ? '""' : text);

/**
 * Parses `argv` against `options`.
 *
 * A string option takes the next argument as its value (`--name value`) or the text after
 * '=' (`--name=value`); the next argument is its value even when it starts with '-' (so
 * `--max-images -1` reaches the option's own check), unless it is another option (`--x`, or a
 * known short option such as -h): then the value is missing. A string option given twice is
 * an error unless `multiple`; positional arguments are errors.
 *
 * @param {string[]} argv
 * @param {Object<string, {type: 'string'|'boolean', multiple?: boolean, default?: string,
 *     short?: string}>} options
 * @returns {Object<string, string|string[]|boolean>}  given values and defaults
 * @throws {UsageError}
 */
export function parseOptions(argv, options) {
  const byShort = new Map(Object.entries(options).filter(([, o]) => o.short)
    .map(([name, o]) => [`-${o.short}`, name]));
  const isOption = (arg) => (arg.startsWith('--') && arg.length > 2) || byShort.has(arg);
  const values = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!isOption(arg)) {
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)} (options start with --; `
        + '--help lists them)');
    }
    let name = byShort.get(arg);
    let inline;
    if (name === undefined) {
      const eq = arg.indexOf('=');
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
    }
    const spec = Object.hasOwn(options, name) ? options[name] : undefined;
    if (!spec) throw new UsageError(`unknown option --${name} (--help lists the options)`);
    if (spec.type === 'boolean') {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      values[name] = true;
      continue;
    }
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= argv.length || isOption(argv[i + 1])) {
        throw new UsageError(`--${name} needs a value`);
      }
      value = argv[++i];
    }
    if (spec.multiple) {
      (values[name] ??= []).push(value);
    } else if (Object.hasOwn(values, name)) {
      throw new UsageError(`give --${name} once`);
    } else {
      values[name] = value;
    }
  }
  for (const [name, spec] of Object.entries(options)) {
    if (!Object.hasOwn(values, name) && spec.default !== undefined) values[name] = spec.default;
  }
  return values;
}

/** Whether argv asks for the usage (--help or -h anywhere). */
export function wantsHelp(argv) {
  return argv.includes('--help') || argv.includes('-h');
}

/**
 * A count option's value: an integer >= 1 (>= 0 with allowZero).
 * @throws {UsageError}  "--<name> wants a positive integer, got <text>"
 */
export function positiveInt(name, text, allowZero = false) {
  if (!/^\d+$/.test(text) || (Number(text) === 0 && !allowZero)) {
    throw new UsageError(`--${name} wants a ${allowZero ? 'non-negative' : 'positive'} `
      + `integer, got ${shown(text)}`);
  }
  return Number(text);
}

/** Whether the stack trace is asked for (RETINA_FOCAL_TRACEBACK set, and not to 0). */
export function wantsTraceback(env = process.env) {
  return !['', '0', undefined].includes(env.RETINA_FOCAL_TRACEBACK);
}

/**
 * The one line for an unexpected error (a bug): "<prog>: internal error: <first line>", with
 * how to see the stack trace unless RETINA_FOCAL_TRACEBACK already shows it.
 */
export function internalErrorLine(prog, err, env = process.env) {
  const message = String(err && err.message ? err.message : err).split('\n')[0];
  return `${prog}: internal error: ${message}`
    + (wantsTraceback(env) ? '' : ' (RETINA_FOCAL_TRACEBACK=1 shows the stack trace)');
}

/**
 * Writes `text` to `file` through `<file>.partial` and a rename, so that no half-written
 * file is left; the partial file is removed whatever fails.
 *
 * @param {string} file
 * @param {string} text
 * @param {string} [option]  the option that named the file, for the message
 * @throws {UsageError}  "<option> <file>: cannot write it: <code>"
 */
export function writeAtomically(file, text, option = '--output') {
  const partial = `${file}.partial`;
  if (fs.existsSync(partial) && !fs.statSync(partial).isFile()) {
    throw new UsageError(`${option} ${file}: ${partial} is in the way (not a file)`);
  }
  try {
    fs.writeFileSync(partial, text);
    fs.renameSync(partial, file);
  } catch (err) {
    fs.rmSync(partial, { force: true });
    throw new UsageError(`${option} ${file}: cannot write it: ${err.code || err.message}`);
  }
}
