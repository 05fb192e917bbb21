export const STATUSES = ['draft', 'sent', 'viewed', 'accepted', 'declined', 'withdrawn'] as const;
export type Status = (typeof STATUSES)[number];
export const STATUS_LABEL: Record<string, string> = {
  draft: 'Draft',
  sent: 'Sent',
  viewed: 'Viewed',
  accepted: 'Accepted',
  declined: 'Declined',
  withdrawn: 'Withdrawn',
};
