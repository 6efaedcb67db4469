/** "host:port" or "[v6]:port", already validated by the config declaration (listenProblem). */
export function listenParts(listen: string): { host: string; port: number } {
  const at = listen.lastIndexOf(":");
  return { host: listen.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(listen.slice(at + 1)) };
}
