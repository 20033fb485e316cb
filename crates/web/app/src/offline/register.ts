// Registers the service worker (worker.ts) where the browser allows one. A failure only
// means no offline copy: the app works the same online.

export function keepForOffline (): void {
  if (!window.isSecureContext || !('serviceWorker' in navigator)) return
  navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {})
}
