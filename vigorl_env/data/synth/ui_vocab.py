"""Label vocabulary of the procedural screens (app and page titles, buttons, fields, names, ...).

Why it exists: realistic UI text is data, not drawing code; keeping the word lists apart makes the
drawing modules readable and the vocabulary easy to extend (appending to a tuple changes which
labels the RNG draws, so it changes samples: treat these as part of the dataset definition).
Split out of `ui.py`, which re-exports everything.
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

# fmt: off
APP_TITLES: tuple[str, ...] = (
    "Acme Cloud", "Nimbus CRM", "Orbit Mail", "Ledgerly", "Pulse Analytics", "Harbor Docs",
    "Taskly", "Northwind Admin", "Atlas Console", "Beacon Support", "Juniper Notes",
    "Cobalt Drive", "Vertex Studio", "Maple Billing", "Quartz HR", "Lumen Photos", "Tidal Finance",
    "Sprout Forms", "Relay Chat", "Summit Projects", "Keystone Wiki", "Cedar Calendar",
    "Falcon Deploy", "Mosaic Design",
)

PAGE_TITLES: tuple[str, ...] = (
    "Account settings", "Project overview", "Team members", "Billing and plans",
    "Notification settings", "Inbox", "Monthly report", "New invoice", "Edit profile", "Security",
    "Integrations", "Shared files", "Orders", "Customers", "Create campaign", "Preferences",
    "Workspace", "Support tickets", "Deployments", "Content library", "Checkout", "Privacy",
    "Subscriptions", "Audit log",
)

BUTTON_LABELS: tuple[str, ...] = (
    "Save", "Cancel", "Submit", "Apply", "Export as PDF", "Download", "Upload file", "Share",
    "Delete", "Edit", "Continue", "Back", "Next", "Sign in", "Create account", "Log out",
    "Create project", "New folder", "Invite members", "Add to cart", "Checkout", "Subscribe",
    "Save changes", "Discard", "Reset", "Send", "Reply", "Archive", "Duplicate", "Preview",
    "Publish", "Schedule", "Import", "Export CSV", "Filter", "Refresh", "Retry", "Confirm", "Done",
    "Close", "Print", "Copy link", "Rename", "Move to", "Upgrade plan", "Start free trial",
    "Contact sales", "View report", "Generate", "Run", "Deploy", "Approve", "Reject", "Book now",
    "Get started", "Add member", "New task", "Save draft", "Send invite", "Update", "Verify email",
    "Connect", "Disconnect", "Compose", "Attach file", "Mark as read", "Restore", "Pay now",
    "Add payment method", "Sync now",
)
#: Generic labels that a page repeats (cards, rows); they make uniqueness non-trivial.
GENERIC_BUTTONS: tuple[str, ...] = (
    "View", "Open", "Edit", "Details", "Manage",
)

LINK_LABELS: tuple[str, ...] = (
    "Forgot password?", "Privacy policy", "Terms of service", "Learn more", "View all",
    "Help center", "Contact us", "Documentation", "Release notes", "See details", "Manage cookies",
    "Change plan", "Read more", "Keyboard shortcuts", "Status page", "API reference",
    "Community forum", "Billing history", "Download invoice", "Edit profile", "Show more",
    "Report a problem", "Send feedback", "What's new", "Pricing", "Careers", "Accessibility",
    "Cookie settings", "Back to dashboard", "Resend code", "Use another account", "View changelog",
    "Open in new tab",
)

#: (field label, placeholder)
FIELDS: tuple[tuple[str, str], ...] = (
    ("Email address", "name@example.com"), ("Full name", "Jane Cooper"),
    ("Password", "Enter password"), ("Phone number", "+1 (555) 000-0000"),
    ("Company", "Acme Inc."), ("Project name", "e.g. Website redesign"), ("Username", "@username"),
    ("Street address", "123 Main St"), ("City", "San Francisco"), ("ZIP code", "94103"),
    ("Card number", "1234 5678 9012 3456"), ("Website", "https://"), ("Title", "Add a title"),
    ("Description", "Write a short description"), ("Tags", "Add tags"), ("Due date", "MM/DD/YYYY"),
    ("Amount", "0.00"), ("Subject", "What is this about?"), ("Recipient", "Add recipients"),
    ("Coupon code", "Enter code"), ("Job title", "Product designer"), ("Country", "United States"),
    ("Display name", "How others see you"), ("Repository URL", "git@github.com:org/repo"),
    ("Budget", "$5,000"), ("Start date", "Select a date"), ("Confirm password", "Repeat password"),
    ("Team name", "e.g. Marketing"), ("Invite by email", "colleague@company.com"),
    ("Notes", "Optional"),
)
SEARCH_PLACEHOLDERS: tuple[str, ...] = (
    "Search…", "Search files", "Search or jump to…", "Search messages", "Type to search",
    "Find a project",
)

CHECKBOX_LABELS: tuple[str, ...] = (
    "Remember me", "Send me product updates", "I agree to the Terms", "Enable notifications",
    "Email me a copy", "Make this project public", "Show hidden files", "Auto-save drafts",
    "Use dark mode", "Enable two-factor authentication", "Include archived items",
    "Notify team members", "Mark as important", "Allow comments", "Use default settings",
    "Sync across devices", "Compact view", "Show line numbers", "Weekly summary email",
    "Play sounds", "Require approval", "Keep me signed in", "Share usage data",
    "Open links in new tab", "Show tooltips", "Send read receipts",
)
CHECKBOX_HINTS: tuple[str, ...] = (
    "You can change this later.", "Applies to all workspaces.", "Recommended for most teams.",
    "Only admins can see this.", "Takes effect immediately.", "Uses a little more storage.",
)

#: (sidebar item, glyph)
SIDEBAR_ITEMS: tuple[tuple[str, str], ...] = (
    ("Dashboard", "grid"), ("Home", "home"), ("Inbox", "mail"), ("Projects", "folder"),
    ("Calendar", "calendar"), ("Reports", "chart"), ("Analytics", "chart"), ("Team", "user"),
    ("Settings", "gear"), ("Notifications", "bell"), ("Files", "folder"), ("Billing", "card"),
    ("Messages", "chat"), ("Documents", "doc"), ("Customers", "user"), ("Orders", "cart"),
    ("Favorites", "star"), ("Trash", "trash"), ("Search", "search"), ("Invoices", "doc"),
    ("Contacts", "user"), ("Starred", "star"), ("Drafts", "doc"), ("Integrations", "grid"),
)
TAB_ITEMS: tuple[tuple[str, str], ...] = (
    ("Home", "home"), ("Search", "search"), ("Inbox", "mail"), ("Activity", "bell"),
    ("Profile", "user"), ("Settings", "gear"), ("Files", "folder"), ("Chats", "chat"),
    ("Favorites", "star"), ("Create", "plus"), ("Calendar", "calendar"), ("Stats", "chart"),
)
SIDEBAR_HEADERS: tuple[str, ...] = (
    "MENU", "WORKSPACE", "GENERAL", "MAIN", "NAVIGATION",
)

SECTION_TITLES: tuple[str, ...] = (
    "Recent projects", "Your files", "Recommended", "Quick actions", "Team activity", "Upcoming",
    "Members", "Payment methods", "Connected apps", "Recent orders", "Saved reports", "Documents",
    "Notifications", "General", "Profile information", "Shipping address", "Security options",
)
CARD_TITLES: tuple[str, ...] = (
    "Website redesign", "Mobile app launch", "Annual report", "Brand guidelines", "Q3 roadmap",
    "Customer survey", "Onboarding flow", "Pricing page", "Data migration", "Holiday campaign",
    "Team offsite", "Security audit", "Help center revamp", "API v2", "Newsletter",
    "Product photos",
)
FIRST_NAMES: tuple[str, ...] = (
    "Alice", "Ben", "Carla", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wes",
    "Yuki",
)
LAST_NAMES: tuple[str, ...] = (
    "Johnson", "Nguyen", "Garcia", "Smith", "Kowalski", "Haddad", "Lee", "Tanaka", "Moreau",
    "Berg", "Patel", "Okafor", "Rossi", "Silva", "Novak", "Fischer", "Cohen", "Ito", "Larsen",
    "Walsh",
)
FILE_WORDS: tuple[str, ...] = (
    "budget", "roadmap", "invoice", "contract", "design review", "meeting notes", "sales report",
    "logo", "proposal", "timesheet", "release plan", "user research", "backup", "screenshot",
)
FILE_EXTS: tuple[str, ...] = (
    ".pdf", ".xlsx", ".docx", ".png", ".csv", ".zip", ".pptx",
)
STATUS_PILLS: tuple[str, ...] = (
    "Active", "Pending", "Draft", "Paid", "Overdue", "Archived", "Shared", "Private", "In review",
)
MONTHS: tuple[str, ...] = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)
STAT_LABELS: tuple[str, ...] = (
    "Active users", "Revenue", "Open tickets", "Conversion rate", "Storage used", "New signups",
    "Avg. response time", "Tasks done", "Page views", "Refunds",
)
# fmt: on
SENTENCES: tuple[str, ...] = (
    "Changes are saved automatically and synced to every device you use.",
    "Invite teammates to collaborate on projects, files and reports.",
    "Only workspace admins can change billing details and plan limits.",
    "Your data is encrypted at rest and in transit.",
    "Export a copy of your reports as PDF or CSV at any time.",
    "Notifications are sent by email once a day unless you change this below.",
    "Archived items stay searchable but no longer appear in your dashboard.",
    "Connect your calendar to see upcoming deadlines next to your tasks.",
    "We will never share your email address with third parties.",
    "Usage is calculated at the end of each billing period.",
    "Two-factor authentication adds an extra layer of security to your account.",
    "Drag and drop files here, or browse to upload them.",
    "Deleted files are kept in the trash for 30 days before they are removed.",
    "The new editor is faster and supports keyboard shortcuts.",
    "Set default permissions for members who join this workspace.",
    "Reports are refreshed every hour with the latest activity.",
    "You can switch plans or cancel your subscription at any time.",
    "Integrations let you send updates to the tools your team already uses.",
    "Recent activity shows who changed what and when.",
    "Use tags to group related documents and find them quickly.",
    "Your trial ends in 12 days; add a payment method to keep your data.",
    "Shared links can be restricted to people in your organization.",
    "Customer records are updated automatically after every order.",
    "Schedule a report to receive it in your inbox every Monday.",
)


def sentence(rng: np.random.Generator) -> str:
    """One realistic UI sentence."""
    return SENTENCES[int(rng.integers(len(SENTENCES)))]


def paragraph_text(rng: np.random.Generator, n_sentences: int) -> str:
    idx = rng.choice(len(SENTENCES), min(n_sentences, len(SENTENCES)), replace=False)
    return " ".join(SENTENCES[int(i)] for i in idx)
