/* A team of two for the ensemble's O(vocabulary) loops: the calling thread and one helper thread
 * each take half of the range.
 *
 * Why: per token the ensemble makes about eight passes over the 262,144-entry vocabulary (0.7 ms
 * on one core), while the machine's other core sits idle between llama.cpp's calls. The passes
 * are integer sums and elementwise operations, so splitting them cannot change a bit: the
 * caller combines the two halves' partial results in range order (see ensemble.c).
 *
 * The helper spins briefly after each job (the next one usually follows within microseconds,
 * for the next pass or the next lane's token) and then sleeps on a condition variable, so it
 * takes no CPU while llama.cpp or nczip's head computes. Where there are no POSIX threads the
 * team is never created and every loop runs in the caller, as it does in a forked child.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "nczip.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define HAVE_TEAM 1
#else
#define HAVE_TEAM 0
#endif

/* Below this many entries a loop is not worth a hand-over. */
#define SPLIT_MIN 16384
/* Polls of the job counter before the helper goes to sleep: about 100 us at ~65 cycles per
 * pause, longer than the Python between two tokens' calls, far shorter than a model call. */
#define SPIN_POLLS 5000

#if HAVE_TEAM
struct ncz_team {
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    unsigned posted;   /* jobs handed over so far (written by the caller) */
    unsigned finished; /* jobs the helper has finished */
    int quit;
    ncz_part_fn fn;
    void *arg;
    size_t lo, hi;
    unsigned epoch; /* fork_epoch when the helper started */
};

/* A forked child has no helper thread (fork copies only the caller): teams made before the fork
 * then run every pass in the caller, and are freed without joining. */
static volatile unsigned fork_epoch;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_in_child(void)
{
    fork_epoch++;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *helper_main(void *p)
{
    ncz_team *t = p;
    unsigned seen = 0;
    for (;;) {
        unsigned job;
        int polls = 0;
        while ((job = __atomic_load_n(&t->posted, __ATOMIC_ACQUIRE)) == seen) {
            if (++polls < SPIN_POLLS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&t->mutex);
            while ((job = __atomic_load_n(&t->posted, __ATOMIC_ACQUIRE)) == seen)
                pthread_cond_wait(&t->wake, &t->mutex);
            pthread_mutex_unlock(&t->mutex);
            break;
        }
        seen = job;
        if (__atomic_load_n(&t->quit, __ATOMIC_ACQUIRE))
            return NULL;
        t->fn(t->arg, t->lo, t->hi, 1);
        __atomic_store_n(&t->finished, seen, __ATOMIC_RELEASE);
    }
}

ncz_team *ncz_team_new(void)
{
    ncz_team *t;
    pthread_once(&atfork_once, register_atfork);
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->epoch = fork_epoch;
    if (pthread_mutex_init(&t->mutex, NULL) != 0) {
        free(t);
        return NULL;
    }
    if (pthread_cond_init(&t->wake, NULL) != 0) {
        pthread_mutex_destroy(&t->mutex);
        free(t);
        return NULL;
    }
    if (pthread_create(&t->thread, NULL, helper_main, t) != 0) {
        pthread_cond_destroy(&t->wake);
        pthread_mutex_destroy(&t->mutex);
        free(t);
        return NULL;
    }
    return t;
}

static void post(ncz_team *t)
{
    __atomic_store_n(&t->posted, t->posted + 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&t->mutex);
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->mutex);
}

void ncz_team_free(ncz_team *t)
{
    if (t == NULL)
        return;
    if (t->epoch != fork_epoch) { /* in a forked child: no helper to stop */
        free(t);
        return;
    }
    __atomic_store_n(&t->quit, 1, __ATOMIC_RELEASE);
    post(t);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->mutex);
    free(t);
}

void ncz_team_split(ncz_team *t, ncz_part_fn fn, void *arg, size_t n)
{
    size_t mid;
    if (t == NULL || n < SPLIT_MIN || t->epoch != fork_epoch) {
        fn(arg, 0, n, 0);
        fn(arg, n, n, 1); /* an empty second half, so results always come in two parts */
        return;
    }
    mid = (n / 2) & ~(size_t)63;
    t->fn = fn;
    t->arg = arg;
    t->lo = mid;
    t->hi = n;
    post(t);
    fn(arg, 0, mid, 0);
    while (__atomic_load_n(&t->finished, __ATOMIC_ACQUIRE) != t->posted)
        cpu_relax();
}
#else
ncz_team *ncz_team_new(void)
{
    return NULL;
}

void ncz_team_free(ncz_team *t)
{
    (void)t;
}

void ncz_team_split(ncz_team *t, ncz_part_fn fn, void *arg, size_t n)
{
    (void)t;
    fn(arg, 0, n, 0);
    fn(arg, n, n, 1);
}
#endif
