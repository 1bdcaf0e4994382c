package guard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// Limit is one rate limit: at most Max actions per Per under Key.
type Limit struct {
	Key string
	Max int
	Per time.Duration
}

func (l Limit) String() string { return fmt.Sprintf("%s: %d per %s", l.Key, l.Max, l.Per) }

// Limiter decides whether an action fits its rate limits.
type Limiter interface {
	// Allow reports whether one more action fits every limit; only when it
	// does is one unit taken from each. Denied names the first limit that
	// is exhausted. An error means the limiter cannot tell (fail closed).
	Allow(ctx context.Context, limits []Limit) (denied *Limit, retryAfter time.Duration, err error)
	// Describe says what the limiter runs on, for the start-up log.
	Describe() string
}

// ErrLimiterUnavailable wraps failures to reach the limiter's store.
var ErrLimiterUnavailable = errors.New("rate limiter unavailable")

// Redis is a Limiter shared by every replica, using GCRA in Redis.
type Redis struct {
	client *redis.Client
	rl     *redis_rate.Limiter
	prefix string
}

var _ Limiter = (*Redis)(nil)

// NewRedis returns a limiter on the Redis at url (redis://host:port/db);
// a non-empty password takes the place of the one in url.
func NewRedis(url, password string) (*Redis, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		// The parse error quotes the URL, password and all: keep it out.
		return nil, errors.New("redis url: not a valid redis:// or rediss:// URL")
	}
	if password != "" {
		opts.Password = password
	}
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = 2 * time.Second
	opts.WriteTimeout = 2 * time.Second
	opts.MaxRetries = 1
	c := redis.NewClient(opts)
	return &Redis{client: c, rl: redis_rate.NewLimiter(c), prefix: "healer:"}, nil
}

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: ping redis %s: %w", ErrLimiterUnavailable, r.client.Options().Addr, err)
	}
	return nil
}

// Close closes the Redis client.
func (r *Redis) Close() error { return r.client.Close() }

// Describe names the Redis address (never its password).
func (r *Redis) Describe() string { return "redis " + r.client.Options().Addr }

// Allow peeks at every limit first and takes a unit from each only when all
// have room, so a denial by the second limit does not use up the first.
func (r *Redis) Allow(ctx context.Context, limits []Limit) (*Limit, time.Duration, error) {
	for i := range limits {
		res, err := r.rl.AllowN(ctx, r.prefix+limits[i].Key, toRedisLimit(limits[i]), 0)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s: %w", ErrLimiterUnavailable, limits[i].Key, err)
		}
		if res.Remaining < 1 {
			return &limits[i], untilNext(limits[i], res.ResetAfter), nil
		}
	}
	for i := range limits {
		res, err := r.rl.Allow(ctx, r.prefix+limits[i].Key, toRedisLimit(limits[i]))
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %s: %w", ErrLimiterUnavailable, limits[i].Key, err)
		}
		if res.Allowed < 1 {
			// Lost a race with another replica between peek and take.
			return &limits[i], res.RetryAfter, nil
		}
	}
	return nil, 0, nil
}

func toRedisLimit(l Limit) redis_rate.Limit {
	return redis_rate.Limit{Rate: l.Max, Burst: l.Max, Period: l.Per}
}

// untilNext estimates when one more unit frees up from the time until the
// bucket is full again.
func untilNext(l Limit, resetAfter time.Duration) time.Duration {
	interval := l.Per / time.Duration(l.Max)
	if d := resetAfter - time.Duration(l.Max-1)*interval; d > 0 {
		return d
	}
	return interval
}

// Local is a Limiter for a single replica: token buckets in memory. Limits
// are not shared with other replicas and are forgotten on restart.
type Local struct {
	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	now     func() time.Time
}

var _ Limiter = (*Local)(nil)

// NewLocal returns an in-process limiter.
func NewLocal() *Local {
	return &Local{buckets: map[string]*rate.Limiter{}, now: time.Now}
}

// Describe says the limiter is in-process.
func (l *Local) Describe() string { return "in-process limiter (single replica only)" }

// Allow takes a unit from every limit when all have room.
func (l *Local) Allow(_ context.Context, limits []Limit) (*Limit, time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	bs := make([]*rate.Limiter, len(limits))
	for i, lim := range limits {
		b := l.bucket(lim)
		if b.TokensAt(now) < 1 {
			r := b.ReserveN(now, 1)
			wait := r.DelayFrom(now)
			r.CancelAt(now)
			return &limits[i], wait, nil
		}
		bs[i] = b
	}
	for _, b := range bs {
		b.AllowN(now, 1)
	}
	return nil, 0, nil
}

func (l *Local) bucket(lim Limit) *rate.Limiter {
	key := fmt.Sprintf("%s|%d|%s", lim.Key, lim.Max, lim.Per)
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) > 100_000 {
			l.prune()
		}
		b = rate.NewLimiter(rate.Every(lim.Per/time.Duration(lim.Max)), lim.Max)
		l.buckets[key] = b
	}
	return b
}

// prune drops full buckets: they hold nothing a new bucket would not.
func (l *Local) prune() {
	now := l.now()
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(b.Burst()) {
			delete(l.buckets, k)
		}
	}
}
