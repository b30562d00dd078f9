/**
 * The host half of the shim that TypeScript sees: the environment that runs a program under
 * `libpno_shim.so` (the preloaded C interposer in ffi/shim) and the offload policy file's
 * format. `pno run` is built from these.
 *
 * @example
 * ```ts
 * import { shimEnv } from "./mod.ts";
 * const env = shimEnv({ control: "/tmp/pno.sock", required: true });
 * if (!env.LD_PRELOAD.endsWith("libpno_shim.so")) throw new Error("no shim");
 * ```
 * @module
 */
export { DEFAULT_CONTROL, SHIM_LIBRARY, shimEnv, type ShimSettings } from "./launcher.ts";
export { checkPolicy } from "./policy.ts";
