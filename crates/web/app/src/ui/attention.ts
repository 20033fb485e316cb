// Sessions that wait for their person, as this page shows them: a badge on each, their
// count in the page's title, a vibration where the device has one, and a notification
// through the Notification API where the page is a secure context and the person allowed
// it (asked only from a tap: browsers refuse, or remember a refusal, otherwise).
//
// The platform's parts come in through `Platform`, so that the rules here are tested
// without a browser.

import type { HostedSession } from '../replica/records.js'
import type { Waiting } from '../session/messages.js'

/** The page's own title, without a count. */
export const BASE_TITLE = 'Loopsy'
/** A short buzz, a pause, another: a person knows it from a message's single one. */
export const VIBRATION = [200, 100, 200]

/** What the page can use of the browser; each part may be missing. */
export interface Platform {
  /** `navigator.vibrate`, where there is one. */
  vibrate?: (pattern: number[]) => boolean
  /** Whether the page is a secure context (HTTPS or localhost): notifications need it. */
  secure: boolean
  /** The Notification API, where there is one. */
  notifications?: {
    permission: () => NotificationPermission
    request: () => Promise<NotificationPermission>
    show: (title: string, body: string, tag: string) => void
  }
  setTitle: (title: string) => void
}

/** The browser's own, for the page. */
export function browserPlatform (): Platform {
  const api = typeof Notification === 'function' ? Notification : undefined
  const vibrate = typeof navigator.vibrate === 'function' ? navigator.vibrate.bind(navigator) : undefined
  return {
    vibrate,
    secure: globalThis.isSecureContext === true,
    notifications: api === undefined
      ? undefined
      : {
          permission: () => api.permission,
          request: async () => await api.requestPermission(),
          show: (title, body, tag) => { void new api(title, { body, tag }) }
        },
    setTitle: title => { document.title = title }
  }
}

/** The title with the number of waiting sessions first, as mail and chat pages do. */
export function pageTitle (waiting: number): string {
  return waiting > 0 ? `(${waiting}) ${BASE_TITLE}` : BASE_TITLE
}

/** What a session's badge says: why it waits, and the text its program gave. */
export function badgeText (waiting: Waiting): string {
  const why = { bell: 'bell', notify: 'asks', exit: 'ended', note: 'note' }[waiting.kind]
  return waiting.text === null ? `waiting · ${why}` : `waiting · ${why}: ${waiting.text}`
}

/** A session's waiting state as one key: a new bell after an answer is a new key. */
function waitKey (session: HostedSession): string | null {
  const waiting = session.info.waiting
  return waiting === null ? null : `${session.info.id}@${waiting.sinceMs}`
}

/** Whether the page may ask for notifications now (a button shows for the tap). */
export function canAskForNotifications (platform: Platform): boolean {
  return platform.secure && platform.notifications?.permission() === 'default'
}

/**
 * Tells the person of sessions that start waiting: the title always, a vibration and a
 * notification for each that was not waiting at the last look. The first look only counts:
 * what waited before the page opened is in the title and the badges, not buzzed again.
 */
export class Attention {
  private seen = new Set<string>()
  private looked = false

  constructor (private readonly platform: Platform) {}

  /** The sessions as listed now; the names their hosts go by, for the notification. */
  update (sessions: HostedSession[], hostName: (session: HostedSession) => string): void {
    const waiting = sessions.filter(s => s.info.waiting !== null)
    this.platform.setTitle(pageTitle(waiting.length))
    const keys = new Set<string>()
    const fresh: HostedSession[] = []
    for (const session of waiting) {
      const key = waitKey(session)
      if (key === null) continue
      keys.add(key)
      if (!this.seen.has(key)) fresh.push(session)
    }
    this.seen = keys
    const first = !this.looked
    this.looked = true
    if (first || fresh.length === 0) return
    this.platform.vibrate?.(VIBRATION)
    const notifications = this.platform.notifications
    if (!this.platform.secure || notifications === undefined || notifications.permission() !== 'granted') return
    for (const session of fresh) {
      const waiting = session.info.waiting
      if (waiting === null) continue
      const name = session.info.name ?? session.info.id
      // The tag makes a newer notification of the same session replace the older one.
      notifications.show(`${name} on ${hostName(session)}`, badgeText(waiting), `loopsy-${session.info.id}`)
    }
  }

  /** Asks for permission: call only from a tap. Whether notifications may be shown now. */
  async ask (): Promise<boolean> {
    const notifications = this.platform.notifications
    if (!this.platform.secure || notifications === undefined) return false
    if (notifications.permission() === 'default') await notifications.request()
    return notifications.permission() === 'granted'
  }
}
