#pragma once
// A minimal intrusive doubly-linked list: a node can leave in O(1) without knowing its list,
// and nothing is allocated. Owner: whoever owns the nodes' thread (shards).
#include <cstddef>

namespace ringlb::core::base {

struct ListLink {
  ListLink* prev = nullptr;
  ListLink* next = nullptr;
  bool linked() const { return prev != nullptr; }
  void unlink() {
    if (prev == nullptr) return;
    prev->next = next;
    next->prev = prev;
    prev = next = nullptr;
  }
};

/// T has a ListLink member named by `Member`.
template <typename T, ListLink T::*Member>
class IntrusiveList {
 public:
  IntrusiveList() { head_.prev = head_.next = &head_; }
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;

  bool empty() const { return head_.next == &head_; }
  void push_back(T* t) {
    ListLink* l = &(t->*Member);
    l->prev = head_.prev;
    l->next = &head_;
    head_.prev->next = l;
    head_.prev = l;
    ++size_;
  }
  void remove(T* t) {
    ListLink* l = &(t->*Member);
    if (!l->linked()) return;
    l->unlink();
    --size_;
  }
  T* front() const { return empty() ? nullptr : owner(head_.next); }
  size_t size() const { return size_; }

  /// Calls f on each element; f may remove the element it is given (and no other).
  template <typename F>
  void for_each(F&& f) {
    for (ListLink* l = head_.next; l != &head_;) {
      ListLink* next = l->next;
      f(owner(l));
      l = next;
    }
  }

 private:
  static T* owner(ListLink* l) {
    // Offset of the member within T, computed from a null-based pointer-to-member.
    const std::ptrdiff_t off =
        reinterpret_cast<std::ptrdiff_t>(&(reinterpret_cast<T*>(0)->*Member));
    return reinterpret_cast<T*>(reinterpret_cast<char*>(l) - off);
  }
  ListLink head_;
  size_t size_ = 0;
};

}  // namespace ringlb::core::base
