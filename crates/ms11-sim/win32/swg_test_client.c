/*
 * A Windows test client for ms11-recovery: a real Win32 program that behaves, from the
 * runner's point of view, like the Star Wars Galaxies client under Wine. Built with
 * mingw (x86_64-w64-mingw32-gcc) by ms11-sim's `win32` module and run with `wine`.
 *
 *   swg_test_client.exe --log FILE [--control-dir DIR] [--startup-ms N]
 *
 * It opens a top-level window titled "Star Wars Galaxies" that repaints a frame counter
 * ten times a second, appends to its log, and refuses a second instance (the retail
 * client's semaphore and message). Command files dropped into the control directory
 * (read and deleted every 100 ms):
 *
 *   crash        an access violation (Wine starts winedbg and its "Program Error" dialog)
 *   exit-N       exits with code N
 *   hang         blocks its message loop for good (the window stops repainting and
 *                stops answering _NET_WM_PING)
 *   dialog       shows a "Fatal Report" message box and stays alive
 */

#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *log_file;
static char control_dir[MAX_PATH];
static DWORD startup_ms = 300;
static DWORD started_at;
static int logged_in;
static unsigned long frame;

static void log_line(const char *text)
{
    SYSTEMTIME t;
    if (!log_file)
        return;
    GetLocalTime(&t);
    fprintf(log_file, "%04d-%02d-%02d %02d:%02d:%02d %s\n", t.wYear, t.wMonth, t.wDay,
            t.wHour, t.wMinute, t.wSecond, text);
    fflush(log_file);
}

/* Reads and deletes one command file; returns its name in `name`, or 0. */
static int next_command(char *name, size_t size)
{
    char pattern[MAX_PATH];
    char path[MAX_PATH];
    WIN32_FIND_DATAA found;
    HANDLE search;
    if (!control_dir[0])
        return 0;
    snprintf(pattern, sizeof pattern, "%s\\*", control_dir);
    search = FindFirstFileA(pattern, &found);
    if (search == INVALID_HANDLE_VALUE)
        return 0;
    do {
        if (found.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
            continue;
        /* Commands are written to a temp name and renamed; skip those in flight. */
        if (found.cFileName[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s\\%s", control_dir, found.cFileName);
        DeleteFileA(path);
        snprintf(name, size, "%s", found.cFileName);
        FindClose(search);
        return 1;
    } while (FindNextFileA(search, &found));
    FindClose(search);
    return 0;
}

static void run_command(HWND window, const char *command)
{
    char line[256];
    snprintf(line, sizeof line, "[Test] command %s", command);
    log_line(line);
    if (strcmp(command, "crash") == 0) {
        log_line("[System] Game has crashed. Please restart the client.");
        *(volatile int *)0 = 1;
    } else if (strncmp(command, "exit-", 5) == 0) {
        log_line("[System] Client shutting down");
        ExitProcess((UINT)atoi(command + 5));
    } else if (strcmp(command, "hang") == 0) {
        log_line("[Test] the message loop hangs now");
        Sleep(INFINITE);
    } else if (strcmp(command, "dialog") == 0) {
        MessageBoxA(window, "Assertion failed: a fatal error occurred.", "Fatal Report",
                    MB_OK | MB_ICONERROR);
    }
}

static LRESULT CALLBACK window_proc(HWND window, UINT message, WPARAM wparam, LPARAM lparam)
{
    switch (message) {
    case WM_TIMER: {
        char command[MAX_PATH];
        frame++;
        InvalidateRect(window, NULL, TRUE);
        if (!logged_in && GetTickCount() - started_at >= startup_ms) {
            logged_in = 1;
            log_line("[Login] Connecting to login server...");
            log_line("[System] Login successful. Welcome to Star Wars Galaxies.");
        }
        if (frame % 20 == 0)
            log_line("[Combat] You attack the womp rat.");
        while (next_command(command, sizeof command))
            run_command(window, command);
        return 0;
    }
    case WM_PAINT: {
        PAINTSTRUCT paint;
        char text[64];
        HDC dc = BeginPaint(window, &paint);
        snprintf(text, sizeof text, "frame %lu", frame);
        TextOutA(dc, 10 + (int)(frame % 50), 10, text, (int)strlen(text));
        EndPaint(window, &paint);
        return 0;
    }
    case WM_DESTROY:
        PostQuitMessage(0);
        return 0;
    }
    return DefWindowProcA(window, message, wparam, lparam);
}

int WINAPI WinMain(HINSTANCE instance, HINSTANCE previous, LPSTR command_line, int show)
{
    WNDCLASSA class_info;
    HWND window;
    MSG message;
    HANDLE semaphore;
    int i;
    (void)previous;
    (void)command_line;
    for (i = 1; i < __argc; i++) {
        if (strcmp(__argv[i], "--log") == 0 && i + 1 < __argc)
            log_file = fopen(__argv[++i], "a");
        else if (strcmp(__argv[i], "--control-dir") == 0 && i + 1 < __argc)
            snprintf(control_dir, sizeof control_dir, "%s", __argv[++i]);
        else if (strcmp(__argv[i], "--startup-ms") == 0 && i + 1 < __argc)
            startup_ms = (DWORD)atoi(__argv[++i]);
    }
    started_at = GetTickCount();
    log_line("[System] Star Wars Galaxies client starting (SwgClient_r 1.0, win32)");
    semaphore = CreateSemaphoreA(NULL, 1, 1, "SwgClientInstanceRunning");
    if (semaphore && GetLastError() == ERROR_ALREADY_EXISTS) {
        log_line("[System] Another instance is running; exiting.");
        MessageBoxA(NULL,
                    "Another instance of this application is already running.  "
                    "Application will now close.",
                    "Star Wars Galaxies", MB_OK);
        return 1;
    }
    memset(&class_info, 0, sizeof class_info);
    class_info.lpfnWndProc = window_proc;
    class_info.hInstance = instance;
    class_info.lpszClassName = "SwgTestClient";
    class_info.hbrBackground = (HBRUSH)GetStockObject(WHITE_BRUSH);
    class_info.hCursor = LoadCursor(NULL, IDC_ARROW);
    RegisterClassA(&class_info);
    window = CreateWindowA("SwgTestClient", "Star Wars Galaxies", WS_OVERLAPPEDWINDOW,
                           CW_USEDEFAULT, CW_USEDEFAULT, 320, 240, NULL, NULL, instance, NULL);
    if (!window)
        return 2;
    ShowWindow(window, show ? show : SW_SHOWNORMAL);
    UpdateWindow(window);
    SetTimer(window, 1, 100, NULL);
    while (GetMessageA(&message, NULL, 0, 0) > 0) {
        TranslateMessage(&message);
        DispatchMessageA(&message);
    }
    log_line("[System] Client shutting down");
    return 0;
}
