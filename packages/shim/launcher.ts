/**
 * Launching an unmodified program under the shim: the environment that preloads
 * `libpno_shim.so` and tells it where to attach.
 *
 * @module
 */

const ROOT = new URL("../../", import.meta.url).pathname;

/** Path of the preload library built by `make -C ffi`. */
export const SHIM_LIBRARY: string = `${ROOT}ffi/build/libpno_shim.so`;

/** Where the shim attaches unless told otherwise. */
export const DEFAULT_CONTROL = "/run/pno/bridge.sock";

/** What the shim reads from its environment. */
export interface ShimSettings {
  /** Control socket of the bridge (or the proxy) that hands out regions. */
  control?: string;
  /** Offload policy file (see policy.ts); absent: the default policy. */
  policyFile?: string;
  /** Fail at start when attaching fails, instead of falling back to the kernel. */
  required?: boolean;
}

/**
 * The environment variables that run a program under the shim, to be merged into the
 * program's own environment. An LD_PRELOAD already set is kept after the shim.
 */
export function shimEnv(settings: ShimSettings = {}): Record<string, string> {
  const existing = Deno.env.get("LD_PRELOAD");
  const env: Record<string, string> = {
    LD_PRELOAD: existing ? `${SHIM_LIBRARY}:${existing}` : SHIM_LIBRARY,
    PNO_CONTROL: settings.control ?? DEFAULT_CONTROL,
  };
  if (settings.policyFile !== undefined) env.PNO_POLICY = settings.policyFile;
  if (settings.required) env.PNO_REQUIRED = "1";
  return env;
}
