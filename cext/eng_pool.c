/* The engine's threads: the caller and threads - 1 workers, each taking one contiguous part of
 * a job's units. A unit's result never depends on which thread computed it (each output is
 * written by one thread in one fixed order), so the split cannot change a bit.
 *
 * A job is a handful of microseconds to a few milliseconds (one matrix, one layer's attention),
 * and a forward pass posts ~100 of them. Workers spin briefly between jobs, then sleep on a
 * condition variable, so that they take no CPU while nczip's single-threaded work (the
 * ensemble, the coder) runs. As in team.c, a forked child has no workers: its jobs run in the
 * caller.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "engine.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define HAVE_POOL 1
#else
#define HAVE_POOL 0
#endif

/* Polls of the job counter before a worker sleeps: ~50 us, longer than the gap between two
 * jobs of a forward pass, short next to the coder's work between two passes. */
#define SPIN_POLLS 2500

#if HAVE_POOL
typedef struct {
    ncz_pool *pool;
    int index;
    pthread_t thread;
} worker;

struct ncz_pool {
    int threads;
    worker *workers;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    unsigned posted;   /* jobs posted (written by the caller) */
    unsigned finished; /* workers done with the current job */
    int quit;
    ncz_pool_fn fn;
    void *arg;
    size_t n;
    unsigned epoch;
};

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

static void run_part(ncz_pool *p, int index)
{
    size_t t = (size_t)p->threads;
    size_t lo = p->n * (size_t)index / t, hi = p->n * (size_t)(index + 1) / t;
    if (lo < hi)
        p->fn(p->arg, lo, hi, index);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    ncz_pool *p = w->pool;
    unsigned seen = 0;
    /* the engine's arithmetic assumes the default float environment in every thread */
    ncz_fpenv_enter();
    for (;;) {
        unsigned job;
        int polls = 0;
        while ((job = __atomic_load_n(&p->posted, __ATOMIC_ACQUIRE)) == seen) {
            if (++polls < SPIN_POLLS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mutex);
            while ((job = __atomic_load_n(&p->posted, __ATOMIC_ACQUIRE)) == seen)
                pthread_cond_wait(&p->wake, &p->mutex);
            pthread_mutex_unlock(&p->mutex);
            break;
        }
        seen = job;
        if (__atomic_load_n(&p->quit, __ATOMIC_ACQUIRE))
            return NULL;
        run_part(p, w->index);
        __atomic_add_fetch(&p->finished, 1, __ATOMIC_ACQ_REL);
    }
}

static void post(ncz_pool *p)
{
    __atomic_store_n(&p->posted, p->posted + 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&p->mutex);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mutex);
}

static void stop_workers(ncz_pool *p, int started)
{
    __atomic_store_n(&p->quit, 1, __ATOMIC_RELEASE);
    post(p);
    for (int i = 0; i < started; i++)
        pthread_join(p->workers[i].thread, NULL);
}

ncz_pool *ncz_pool_new(int threads)
{
    if (threads <= 1)
        return NULL;
    pthread_once(&atfork_once, register_atfork);
    ncz_pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->workers = calloc((size_t)threads - 1, sizeof *p->workers);
    if (p->workers == NULL || pthread_mutex_init(&p->mutex, NULL) != 0) {
        free(p->workers);
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->mutex);
        free(p->workers);
        free(p);
        return NULL;
    }
    p->threads = threads;
    p->epoch = fork_epoch;
    for (int i = 0; i < threads - 1; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i + 1;
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            stop_workers(p, i);
            pthread_cond_destroy(&p->wake);
            pthread_mutex_destroy(&p->mutex);
            free(p->workers);
            free(p);
            return NULL;
        }
    }
    return p;
}

void ncz_pool_free(ncz_pool *p)
{
    if (p == NULL)
        return;
    if (p->epoch == fork_epoch) {
        stop_workers(p, p->threads - 1);
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->mutex);
    }
    free(p->workers);
    free(p);
}

int ncz_pool_threads(const ncz_pool *p)
{
    return p == NULL ? 1 : p->threads;
}

void ncz_pool_run(ncz_pool *p, ncz_pool_fn fn, void *arg, size_t n)
{
    if (n == 0)
        return;
    if (p == NULL || p->epoch != fork_epoch || n == 1) {
        fn(arg, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    __atomic_store_n(&p->finished, 0, __ATOMIC_RELEASE);
    post(p);
    run_part(p, 0);
    unsigned want = (unsigned)p->threads - 1;
    while (__atomic_load_n(&p->finished, __ATOMIC_ACQUIRE) != want)
        cpu_relax();
}
#else
ncz_pool *ncz_pool_new(int threads)
{
    (void)threads;
    return NULL;
}

void ncz_pool_free(ncz_pool *p)
{
    (void)p;
}

int ncz_pool_threads(const ncz_pool *p)
{
    (void)p;
    return 1;
}

void ncz_pool_run(ncz_pool *p, ncz_pool_fn fn, void *arg, size_t n)
{
    (void)p;
    if (n)
        fn(arg, 0, n, 0);
}
#endif
